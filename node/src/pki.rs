//! A throwaway certificate authority for one machine's cluster: `crail cluster --tls` and the
//! TLS tests. It signs one certificate that names every host of the cluster (IP addresses and
//! `localhost`) and serves both as the servers' and as the clients' certificate, so mutual TLS
//! works with the same files. A real deployment brings its own CA and per-host certificates
//! (see SECURITY.md).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crail_store::Config;

use crate::ClusterConfig;
use crate::error::{Error, Result};

/// The files a [`write`] made.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// The authority's certificate (PEM): `[security] tls_ca`.
    pub ca: PathBuf,
    /// The certificate for every host (PEM): `tls_cert`.
    pub cert: PathBuf,
    /// Its key (PEM, readable by its owner only): `tls_key`.
    pub key: PathBuf,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("cannot make the cluster's TLS {what}: {e}"))
}

/// Makes a new authority and a certificate for `hosts` (and `localhost`) in `dir`.
pub fn write(dir: &Path, hosts: &[IpAddr]) -> Result<PkiFiles> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // A name of its own: two clusters' authorities never pass for each other.
    let mut tag = [0u8; 8];
    getrandom::fill(&mut tag).map_err(|e| failed("CA name", e))?;
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("crail cluster CA {tag} (throwaway)"),
    );
    let ca_key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
    let ca = CertifiedIssuer::self_signed(ca, ca_key).map_err(|e| failed("CA", e))?;

    let mut names: Vec<String> = hosts.iter().map(ToString::to_string).collect();
    names.push("localhost".into());
    let mut leaf = CertificateParams::new(names).map_err(|e| failed("certificate", e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "crail cluster node");
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().map_err(|e| failed("key", e))?;
    let cert = leaf
        .signed_by(&key, &ca)
        .map_err(|e| failed("certificate", e))?;

    let files = PkiFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
    };
    let write = |path: &Path, text: &str, mode: u32| -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| failed(&path.display().to_string(), e))
    };
    write(&files.ca, &ca.pem(), 0o644)?;
    write(&files.cert, &cert.pem(), 0o644)?;
    write(&files.key, &key.serialize_pem(), 0o600)?;
    Ok(files)
}

/// Turns TLS on in `config` for `cluster`: a new authority and a certificate for its namenode
/// and every node, written in `dir`; with `client_auth`, every peer must present one.
pub fn turn_on(
    dir: &Path,
    cluster: &ClusterConfig,
    config: &mut Config,
    client_auth: bool,
) -> Result<PkiFiles> {
    let mut hosts = vec![cluster.listen.ip()];
    hosts.extend((0..cluster.nodes).map(ClusterConfig::host));
    let files = write(dir, &hosts)?;
    config.security.tls_ca = Some(files.ca.clone());
    config.security.tls_cert = Some(files.cert.clone());
    config.security.tls_key = Some(files.key.clone());
    config.security.tls_client_auth = client_auth;
    config.apply_security()?;
    Ok(files)
}
