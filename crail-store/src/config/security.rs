//! `[security]`: the secrets and the local group, checked and copied into the sections that
//! use them.

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Config;
use crate::error::{Error, Result};
use crate::wire::handshake::Secret;
use crate::wire::tls::{Tls, TlsFiles};

/// `[security]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Shared secret every connection must prove (at least 16 bytes); unset means open.
    pub secret: Option<String>,
    /// Secret datanodes prove to the namenode instead (at least 16 bytes, not `secret`): only
    /// its holders may register, heartbeat or deregister a datanode, and the block grants'
    /// key derives from it, so clients cannot forge grants. Needs `secret`; unset: any client
    /// may act as a datanode.
    pub datanode_secret: Option<String>,
    /// A group (numeric id) whose local processes may use the datanodes' and node services'
    /// Unix sockets besides the servers' own user (and root); unset: only those.
    pub local_group: Option<u32>,
    /// PEM file of the authorities that sign the cluster's certificates. Set, every TCP
    /// connection (namenode, datanodes, shuffle and broadcast services) speaks TLS 1.3 and
    /// checks the server's certificate; same-host Unix sockets stay as they are.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain of this process: every server needs one (with `tls_key`); a
    /// client presents it when `tls_client_auth` asks.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Servers require every peer to present a certificate signed by `tls_ca` (mutual TLS).
    pub tls_client_auth: bool,
    /// The name servers' certificates are checked against; unset: the host or IP address
    /// dialled (so each server's certificate names its address).
    pub tls_server_name: Option<String>,
}

impl SecurityConfig {
    /// The TLS settings, loaded from their files; `None` when `tls_ca` is unset.
    pub fn tls(&self) -> Result<Option<Arc<Tls>>> {
        let Some(ca) = &self.tls_ca else {
            let stray = [
                ("tls_cert", self.tls_cert.is_some()),
                ("tls_key", self.tls_key.is_some()),
                ("tls_client_auth", self.tls_client_auth),
                ("tls_server_name", self.tls_server_name.is_some()),
            ];
            if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(Error::Config {
                    key: format!("security.{key}"),
                    reason: "needs security.tls_ca (which turns TLS on)".into(),
                });
            }
            return Ok(None);
        };
        let files = TlsFiles {
            ca: ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_auth: self.tls_client_auth,
            server_name: self.tls_server_name.clone(),
        };
        Tls::load(&files).map(|tls| Some(Arc::new(tls)))
    }
}

impl Config {
    /// Copies `[security]` into the sections that use it: the secrets, checked as
    /// [`check_secrets`] does, the local group, and the TLS settings loaded from their files.
    pub fn apply_security(&mut self) -> Result<()> {
        let parse = |key: &str, text: &Option<String>| match text {
            Some(text) => Secret::new(text).map(Some).ok_or_else(|| Error::Config {
                key: format!("security.{key}"),
                reason: "must not be empty".into(),
            }),
            None => Ok(None),
        };
        let secret = parse("secret", &self.security.secret)?;
        let datanode_secret = parse("datanode_secret", &self.security.datanode_secret)?;
        check_secrets(secret.as_ref(), datanode_secret.as_ref())?;
        self.namenode.secret = secret.clone();
        self.namenode.datanode_secret = datanode_secret.clone();
        self.datanode.secret = secret.clone();
        self.datanode.datanode_secret = datanode_secret;
        self.datanode.local_group = self.security.local_group;
        self.client.secret = secret;
        let tls = self.security.tls()?;
        self.namenode.tls = tls.clone();
        self.datanode.tls = tls.clone();
        self.client.tls = tls;
        Ok(())
    }
}

/// Refuses secrets shorter than [`Secret::MIN_LEN`] bytes, a datanode secret without a
/// clients' one, and the same secret for both.
pub fn check_secrets(secret: Option<&Secret>, datanode_secret: Option<&Secret>) -> Result<()> {
    let short = |key: &str| Error::Config {
        key: format!("security.{key}"),
        reason: format!(
            "shorter than {} bytes: too easy to guess (`openssl rand -hex 16` makes one)",
            Secret::MIN_LEN
        ),
    };
    if secret.is_some_and(|s| s.len() < Secret::MIN_LEN) {
        return Err(short("secret"));
    }
    if let Some(dn) = datanode_secret {
        if dn.len() < Secret::MIN_LEN {
            return Err(short("datanode_secret"));
        }
        let reason = match secret {
            None => "needs security.secret (an open cluster has no datanode role)",
            Some(s) if s == dn => "must differ from security.secret",
            Some(_) => return Ok(()),
        };
        return Err(Error::Config {
            key: "security.datanode_secret".into(),
            reason: reason.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::error::Error;

    fn refused(toml: &str) -> (String, String) {
        match Config::from_toml(toml) {
            Err(Error::Config { key, reason }) => (key, reason),
            other => panic!("{toml}: {other:?}"),
        }
    }

    #[test]
    fn tls_settings_need_a_ca_and_name_the_file_that_fails() {
        let (key, reason) = refused("[security]\ntls_cert = \"/etc/node.pem\"");
        assert_eq!(key, "security.tls_cert");
        assert!(reason.contains("needs security.tls_ca"), "{reason}");

        let (key, reason) = refused("[security]\ntls_ca = \"/nonexistent/ca.pem\"");
        assert_eq!(key, "security.tls_ca");
        assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");

        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let (key, reason) = refused(&format!("[security]\ntls_ca = {:?}", junk));
        assert_eq!(key, "security.tls_ca");
        assert!(reason.contains("no PEM certificate"), "{reason}");
    }
}
