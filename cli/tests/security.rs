//! Trust on every port of a real `crail cluster` with a secret: every listening socket
//! (namenode, datanode, shuffle and broadcast services; TCP and Unix) refuses a wrong secret
//! and none; a client cannot act as a datanode; peers that announce huge frames do not make
//! a node reserve memory for them; a shuffle larger than the node takes is refused.

#![allow(clippy::unwrap_used)]

mod process;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use bytes::BytesMut;
use crail_store::wire::handshake;
use crail_store::{Error, Secret};
use process::{Cluster, endpoints};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

const SECRET: &str = "the-cluster-secret-0123";
const HOST: &str = "127.0.0.2";

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

async fn connect(addr: &str) -> Box<dyn Stream> {
    match addr.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let at = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
            let std = std::os::unix::net::UnixStream::connect_addr(&at)
                .unwrap_or_else(|e| panic!("{addr}: {e}"));
            std.set_nonblocking(true).unwrap();
            Box::new(tokio::net::UnixStream::from_std(std).unwrap())
        }
        None => Box::new(tokio::net::TcpStream::connect(addr).await.unwrap()),
    }
}

/// The handshake with `secret` on a fresh connection to `addr`; the stream if it passed.
async fn greet(addr: &str, secret: Option<&str>) -> Result<Box<dyn Stream>, Error> {
    let mut stream = connect(addr).await;
    handshake_on(&mut stream, secret).await?;
    Ok(stream)
}

async fn handshake_on(stream: &mut impl Stream, secret: Option<&str>) -> Result<(), Error> {
    let secret = secret.and_then(Secret::new);
    let mut buf = BytesMut::new();
    handshake::client_of(
        stream,
        &mut buf,
        secret.as_ref(),
        "security test",
        Duration::from_secs(5),
    )
    .await
    .map(|_| ())
}

/// [`greet`] over TCP from local address `from`.
async fn greet_from(from: &str, addr: &str, secret: Option<&str>) -> Result<(), Error> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    handshake_on(&mut stream, secret).await
}

/// Memory of process `pid` in bytes: resident, and reserved for data (heap and mappings, a
/// reservation counts before it is touched: too many and an allocation fails, which aborts).
fn memory(pid: &str) -> (u64, u64) {
    (status(pid, "VmRSS:"), status(pid, "VmData:"))
}

fn status(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    kib << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_wants_the_secret_and_no_peer_sizes_a_nodes_memory() {
    let cluster = Cluster::start(
        &["--nodes", "1", "--dram", "64MiB"],
        &[("CRAIL_SECURITY_SECRET", SECRET)],
    );
    let endpoints = endpoints(&cluster);
    assert_eq!(endpoints.len(), 7, "{endpoints:?}");
    for (what, addr) in &endpoints {
        for wrong in [None, Some("a-wrong-secret-0123456")] {
            let err = greet(addr, wrong).await.err();
            assert!(
                matches!(err, Some(Error::AuthFailed { .. })),
                "{what} {addr} with {wrong:?}: {err:?}"
            );
        }
        greet(addr, Some(SECRET))
            .await
            .unwrap_or_else(|e| panic!("{what} {addr}: {e}"));
    }

    // A local process of another user is turned away from every Unix socket before the
    // handshake (when this test can run one: as root).
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
        for (what, addr) in endpoints.iter().filter(|(what, _)| what.ends_with("unix")) {
            let name = addr.strip_prefix('@').unwrap();
            let script = format!(
                "import socket\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(5)\n\
                 s.connect('\\0' + {name:?})\nprint(s.recv(65536))"
            );
            let out = std::process::Command::new("python3")
                .args(["-c", &script])
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                said.contains("connecting over the local socket"),
                "{what}: {said} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // An address that keeps failing the handshake is refused for a while, even with the
    // right secret; other addresses are not.
    for _ in 0..crail_store::wire::gate::MAX_FAILURES {
        let err = greet_from(
            "127.0.0.9",
            &cluster.namenode,
            Some("a-wrong-secret-0123456"),
        )
        .await;
        assert!(matches!(err, Err(Error::AuthFailed { .. })));
    }
    let err = greet_from("127.0.0.9", &cluster.namenode, Some(SECRET))
        .await
        .err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.to_string().contains("failed handshakes from 127.0.0.9")),
        "{err:?}"
    );
    greet_from("127.0.0.8", &cluster.namenode, Some(SECRET))
        .await
        .unwrap();

    // A client with the cluster's secret cannot act as a datanode, even from a node's host.
    let store = cluster.store_on(HOST).await;
    let err = store
        .register_datanode(&crail_store::DatanodeSpec {
            host: HOST.parse().unwrap(),
            address: format!("{HOST}:1").parse().unwrap(),
            tier: "dram".into(),
            storage_class: 0,
            capacity: 64 << 20,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotPermitted { .. }), "{err}");

    // 1,000 peers, each announcing a 16 MiB frame and sending a few bytes of it: before the
    // handshake (a datanode), after it (the namenode), and after opening a session (the
    // shuffle service, TCP and Unix). Servers reserve memory for bytes that arrive, not for
    // lengths announced.
    let node = cluster.node_pids().pop().unwrap().1;
    let namenode = cluster.child.id().to_string();
    let before = [memory(&node), memory(&namenode)];
    let find = |name: &str| {
        endpoints
            .iter()
            .find(|(what, _)| what == name)
            .unwrap()
            .1
            .clone()
    };
    let mut open = BytesMut::new();
    crail_store::wire::frame::put_header(&mut open, 128, 0, 0, 0);
    let mut huge = BytesMut::new();
    crail_store::wire::frame::put_header(&mut huge, 130, 0, 1, 16 << 20);
    huge.extend_from_slice(&[7; 100]);
    let mut held = Vec::new();
    for i in 0..1000 {
        let (mut stream, session) = match i % 4 {
            0 => (connect(&find("datanode")).await, false),
            1 => (greet(&cluster.namenode, Some(SECRET)).await.unwrap(), false),
            2 => (greet(&find("shuffle"), Some(SECRET)).await.unwrap(), true),
            _ => (
                greet(&find("shuffle unix"), Some(SECRET)).await.unwrap(),
                true,
            ),
        };
        if session {
            stream.write_all(&open).await.unwrap();
        }
        // A peer refused at once may be gone before its bytes land.
        let _ = stream.write_all(&huge).await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (pid, before, what) in [
        (&node, before[0], "node"),
        (&namenode, before[1], "namenode"),
    ] {
        let after = memory(pid);
        let grown = (
            after.0.saturating_sub(before.0),
            after.1.saturating_sub(before.1),
        );
        eprintln!(
            "1,000 peers announcing 16 MiB: the {what} grew by {} KiB resident, {} MiB reserved",
            grown.0 >> 10,
            grown.1 >> 20
        );
        assert!(
            grown.0 < 64 << 20 && grown.1 < 256 << 20,
            "the {what} grew by {} MiB resident, {} MiB reserved",
            grown.0 >> 20,
            grown.1 >> 20
        );
    }
    drop(held);

    // A shuffle larger than the node's service takes: a typed refusal.
    let client = crail_shuffle::ShuffleClient::connect_local(store, "app")
        .await
        .unwrap();
    let id = crail_shuffle::ShuffleId::new("app", 0);
    let err = client
        .register(&id, &crail_shuffle::Meta::new(4, 1_000_000_000, "kv"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, crail_shuffle::Error::Invalid { problem, .. } if problem.contains("max_partitions")),
        "{err}"
    );
    client
        .register(&id, &crail_shuffle::Meta::new(4, 1000, "kv"))
        .await
        .unwrap();
}
