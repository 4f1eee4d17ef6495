//! TLS on a real `crail cluster --tls`: every TCP port (namenode, datanode, shuffle and
//! broadcast services) speaks TLS with the cluster's certificate; a client that trusts another
//! authority, or speaks in the clear, is refused before the store's handshake; files, shuffles
//! and broadcast values go through TLS whole; the same-host Unix sockets stay as they are.
//! With mutual TLS, a client without a certificate is refused everywhere.

#![allow(clippy::unwrap_used)]

mod process;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use crail_broadcast::{BroadcastClient, VarId};
use crail_node_service::Endpoint;
use crail_shuffle::{Meta, ShuffleClient, ShuffleId};
use crail_store::wire::handshake;
use crail_store::wire::tls::{Tls, TlsFiles, host_of};
use crail_store::{Error, Secret};
use process::{Cluster, endpoints};

const SECRET: &str = "the-cluster-secret-0123";
const NODE: &str = "127.0.0.2";

/// The store's handshake with the cluster's secret on `stream`.
async fn greet(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
) -> Result<(), Error> {
    let secret = Secret::new(SECRET);
    let mut buf = BytesMut::new();
    handshake::client_of(
        stream,
        &mut buf,
        secret.as_ref(),
        "tls test",
        Duration::from_secs(5),
    )
    .await
    .map(|_| ())
}

/// TLS to `addr` with `tls`, then the handshake.
async fn greet_tls(tls: &Tls, addr: &str) -> Result<(), Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tls.connect(tcp, host_of(addr), addr).await?;
    greet(&mut stream).await
}

/// TLS settings that trust an authority of their own, not the cluster's.
fn stranger(dir: &std::path::Path) -> Tls {
    let files = crail_node::pki::write(dir, &[NODE.parse().unwrap()]).unwrap();
    Tls::load(&TlsFiles {
        ca: files.ca,
        ..TlsFiles::default()
    })
    .unwrap()
}

fn start(extra: &[&str]) -> Cluster {
    let mut args = vec!["--nodes", "1", "--dram", "128MiB", "--tls"];
    args.extend_from_slice(extra);
    Cluster::start(&args, &[("CRAIL_SECURITY_SECRET", SECRET)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tcp_port_speaks_tls_with_the_clusters_authority_only() {
    let cluster = start(&[]);
    let ours = cluster
        .client_on("127.0.0.1")
        .tls
        .expect("the client config turns TLS on");
    let theirs = stranger(cluster.dir.path());
    let endpoints = endpoints(&cluster);
    assert_eq!(endpoints.len(), 7, "{endpoints:?}");
    for (what, addr) in &endpoints {
        if what.ends_with("unix") {
            // Same host: no TLS, the secret as before.
            use std::os::linux::net::SocketAddrExt;
            let name = addr.strip_prefix('@').unwrap();
            let at = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
            let std = std::os::unix::net::UnixStream::connect_addr(&at).unwrap();
            std.set_nonblocking(true).unwrap();
            let mut stream = tokio::net::UnixStream::from_std(std).unwrap();
            greet(&mut stream)
                .await
                .unwrap_or_else(|e| panic!("{what} {addr}: {e}"));
            continue;
        }
        greet_tls(&ours, addr)
            .await
            .unwrap_or_else(|e| panic!("{what} {addr}: {e}"));
        let err = greet_tls(&theirs, addr).await.unwrap_err();
        assert!(
            matches!(&err, Error::AuthFailed { reason } if reason.contains("invalid peer certificate")),
            "{what} {addr} with another authority: {err}"
        );
        let mut plain = tokio::net::TcpStream::connect(addr.as_str()).await.unwrap();
        let err = greet(&mut plain).await.unwrap_err();
        assert!(
            matches!(&err, Error::AuthFailed { reason } if reason.contains("TLS only")),
            "{what} {addr} in the clear: {err}"
        );
    }

    // A file through the datanode's TCP port (this client is on no node's host).
    let dir = cluster.dir.path();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 4099) as u8)
        .collect();
    std::fs::write(dir.join("in.bin"), &data).unwrap();
    cluster.ok(&["fs", "-put", dir.join("in.bin").to_str().unwrap(), "/f.bin"]);
    cluster.ok(&[
        "fs",
        "-get",
        "/f.bin",
        dir.join("out.bin").to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(dir.join("out.bin")).unwrap() == data,
        "the file changed"
    );

    // A shuffle and a broadcast value through the node's services over TCP.
    let store = cluster.store_on("127.0.0.1").await;
    let tcp = |service: &str| {
        let (_, addr) = endpoints.iter().find(|(what, _)| what == service).unwrap();
        Endpoint::Tcp(addr.parse().unwrap())
    };
    let shuffles = ShuffleClient::connect(&tcp("shuffle"), "app-t", store.clone())
        .await
        .unwrap();
    let id = ShuffleId::new("app-t", 0);
    shuffles
        .register(&id, &Meta::new(2, 4, "fixed:10:90"))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for map in 0..2u32 {
        let mut writer = shuffles.map_writer(&id, map, 0).await.unwrap();
        for partition in 0..4u32 {
            let bytes = vec![(map * 4 + partition) as u8; 100_000];
            writer.write(partition, &bytes).await.unwrap();
            expected.push((partition, map, bytes));
        }
        writer.commit().await.unwrap();
    }
    let mut reader = shuffles.read(&id, 0..4, None, 4).await.unwrap();
    let mut got: std::collections::BTreeMap<(u32, u32), Vec<u8>> = Default::default();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        got.entry((chunk.partition, chunk.map))
            .or_default()
            .extend_from_slice(&chunk.data);
    }
    for (partition, map, bytes) in expected {
        assert!(
            got[&(partition, map)] == bytes,
            "partition {partition} of map {map}"
        );
    }

    let broadcasts = BroadcastClient::connect(&tcp("broadcast"), "app-t", store.config())
        .await
        .unwrap();
    let var = VarId::new("app-t", "v");
    let value: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    broadcasts.put(&var, &value).await.unwrap();
    let mut reader = broadcasts.get(&var, Duration::from_secs(10)).await.unwrap();
    let mut back = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        back.extend_from_slice(&chunk);
    }
    assert!(back == value, "the broadcast value changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_a_client_without_a_certificate_is_refused_everywhere() {
    let cluster = start(&["--tls-client-auth"]);
    let config = cluster.client_on("127.0.0.1");
    let with_cert = config.tls.clone().unwrap();
    let ca = config_value(&cluster, "tls_ca");
    let without = Tls::load(&TlsFiles {
        ca: ca.into(),
        ..TlsFiles::default()
    })
    .unwrap();
    for (what, addr) in endpoints(&cluster)
        .iter()
        .filter(|(w, _)| !w.ends_with("unix"))
    {
        greet_tls(&with_cert, addr)
            .await
            .unwrap_or_else(|e| panic!("{what} {addr}: {e}"));
        let err = greet_tls(&without, addr).await.unwrap_err();
        assert!(
            matches!(&err, Error::AuthFailed { .. } | Error::Io { .. }),
            "{what} {addr} without a certificate: {err}"
        );
    }
    // A store client in the clear is told why; one that speaks TLS to a server in the clear
    // too.
    let mut clear = config.clone();
    clear.tls = None;
    let err = crail_store::Store::connect(&clear).await.unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed { reason } if reason.contains("TLS only")),
        "{err}"
    );
    let plain = crail_store::namenode::RunningNamenode::start(crail_store::NamenodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut to_plain = config.clone();
    to_plain.namenode = plain.addr().to_string();
    let err = crail_store::Store::connect(&to_plain).await.unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed { reason } if reason.contains("does the server take TLS")),
        "{err}"
    );

    // The store client with the cluster's certificate works; without one it is refused.
    let store = crail_store::Store::connect(&config).await.unwrap();
    store.stat("/").await.unwrap();
    let mut bare = config.clone();
    bare.tls = Some(Arc::new(without));
    let err = crail_store::Store::connect(&bare).await.unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed { reason } if reason.contains("TLS")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_last_words_before_it_closes_arrive_over_tls() {
    // A namenode that takes one connection: the second is told it is busy, over TLS, although
    // the namenode closes without reading what that client sent (its reset must not eat the
    // reply).
    let dir = tempfile::tempdir().unwrap();
    let files = crail_node::pki::write(dir.path(), &["127.0.0.1".parse().unwrap()]).unwrap();
    let server = Tls::load(&TlsFiles {
        ca: files.ca.clone(),
        cert: Some(files.cert),
        key: Some(files.key),
        ..TlsFiles::default()
    })
    .unwrap();
    let nn = crail_store::namenode::RunningNamenode::start(crail_store::NamenodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections: 1,
        tls: Some(Arc::new(server)),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut config = crail_store::ClientConfig::for_namenode(nn.addr());
    config.tls = Some(Arc::new(
        Tls::load(&TlsFiles {
            ca: files.ca,
            ..TlsFiles::default()
        })
        .unwrap(),
    ));
    let first = crail_store::Store::connect(&config).await.unwrap();
    for _ in 0..5 {
        let err = crail_store::Store::connect(&config).await.unwrap_err();
        assert!(matches!(&err, Error::ServerBusy { limit: 1 }), "{err}");
    }
    first.stat("/").await.unwrap();
}

/// A `[security]` setting of the cluster's client configuration.
fn config_value(cluster: &Cluster, key: &str) -> String {
    let text = std::fs::read_to_string(&cluster.config).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap();
    serde_json::from_str(line).unwrap()
}
