//! Bad input at the protocol level: versions, secrets, oversized and malformed frames, unknown
//! messages, connection limits, silent and hostile clients, shutdown. The namenode must answer
//! each with a typed error and keep serving everyone else.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{client, client_config, fast_config, start, start_with};
use crail_store::testing::{self, KIND_HELLO, KIND_LOOKUP};
use crail_store::{ByteSize, ClientConfig, Error, NamenodeConfig, PathProblem, Secret, Store};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one reply frame: (kind, id, error).
async fn reply(stream: &mut TcpStream, buf: &mut BytesMut) -> (u16, u64, Option<Error>) {
    loop {
        if let Some(frame) = testing::decode_reply(buf).unwrap() {
            return frame;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_buf(buf))
            .await
            .expect("no reply within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed before a reply");
    }
}

/// Asserts the server closes the connection.
async fn closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "connection still open");
}

async fn raw(nn: &crail_store::namenode::RunningNamenode) -> TcpStream {
    let mut stream = TcpStream::connect(nn.addr()).await.unwrap();
    testing::handshake(&mut stream).await.unwrap();
    stream
}

#[tokio::test]
async fn a_wrong_protocol_version_gets_a_clear_error_and_a_closed_connection() {
    let nn = start().await;
    // Version 1 (read replies without their slot) and one from the future.
    for sent in [1, 99] {
        let mut stream = TcpStream::connect(nn.addr()).await.unwrap();
        let hello = testing::raw_frame(KIND_HELLO, 1, 0, &testing::hello_body(sent));
        stream.write_all(&hello).await.unwrap();
        let mut buf = BytesMut::new();
        let (_, _, error) = reply(&mut stream, &mut buf).await;
        let error = error.unwrap();
        // The error as the peer sent it: "ours" is the side that sent the hello.
        assert!(
            matches!(
                error,
                Error::VersionMismatch { ours, theirs: crail_store::PROTOCOL_VERSION } if ours == sent
            ),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "protocol version mismatch: this side speaks {sent}, the peer speaks {}",
                crail_store::PROTOCOL_VERSION
            )
        );
        closed(&mut stream).await;
    }
}

#[tokio::test]
async fn the_shared_secret_is_checked_both_ways() {
    let nn = start_with(NamenodeConfig {
        secret: Secret::new("s3cret-s3cret-s3cret"),
        ..fast_config()
    })
    .await;
    let good = client_config(&nn).with_secret(Secret::new("s3cret-s3cret-s3cret"));
    let store = Store::connect(&good).await.unwrap();
    store.stat("/").await.unwrap();

    let wrong = client_config(&nn).with_secret(Secret::new("guess"));
    let err = Store::connect(&wrong).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "authentication failed: wrong shared secret"
    );
    let err = Store::connect(&client_config(&nn)).await.unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");

    // And a client with a secret refuses a server without one.
    let open = start().await;
    let err =
        Store::connect(&client_config(&open).with_secret(Secret::new("s3cret-s3cret-s3cret")))
            .await
            .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
    // The authenticated client was never disturbed.
    store.stat("/").await.unwrap();
}

#[tokio::test]
async fn only_the_datanode_secret_registers_heartbeats_or_deregisters_datanodes() {
    let (clients, datanodes) = (
        Secret::new("the-clients-secret!"),
        Secret::new("the-datanodes-secret"),
    );
    let nn = start_with(NamenodeConfig {
        secret: clients.clone(),
        datanode_secret: datanodes.clone(),
        ..fast_config()
    })
    .await;
    let on = |host: &str, secret: &Option<Secret>| {
        client_config(&nn)
            .with_local_host(host.parse().unwrap())
            .with_secret(secret.clone())
    };
    let spec = |host: &str| crail_store::DatanodeSpec {
        host: host.parse().unwrap(),
        address: format!("{host}:7000").parse().unwrap(),
        tier: "dram".into(),
        storage_class: 0,
        capacity: 4 << 20,
    };
    let client = Store::connect(&on("127.0.0.2", &clients)).await.unwrap();
    let err = client
        .register_datanode(&spec("127.0.0.2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotPermitted { .. }), "{err}");
    let datanode = Store::connect(&on("127.0.0.2", &datanodes)).await.unwrap();
    // Not another host's address either.
    let err = datanode
        .register_datanode(&spec("127.0.0.3"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("connects from 127.0.0.2 but announces host 127.0.0.3"),
        "{err}"
    );
    let registered = datanode
        .register_datanode(&spec("127.0.0.2"))
        .await
        .unwrap();
    for err in [
        client.heartbeat(&registered).await.unwrap_err(),
        client.deregister_datanode(&registered).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::NotPermitted { .. }), "{err}");
    }
    datanode.heartbeat(&registered).await.unwrap();
    // A datanode secret holder is a client too.
    datanode.stat("/").await.unwrap();
    let info = client.cluster_info().await.unwrap();
    assert!(
        info.datanodes
            .iter()
            .any(|d| d.id == registered.id && d.alive)
    );
    datanode.deregister_datanode(&registered).await.unwrap();
}

#[tokio::test]
async fn secrets_shorter_than_16_bytes_and_shared_datanode_secrets_are_refused_at_start() {
    for (secret, datanode_secret, key) in [
        (Some("short"), None, "security.secret"),
        (
            Some("long-enough-secret"),
            Some("short"),
            "security.datanode_secret",
        ),
        (None, Some("long-enough-secret"), "security.datanode_secret"),
        (
            Some("long-enough-secret"),
            Some("long-enough-secret"),
            "security.datanode_secret",
        ),
    ] {
        let config = NamenodeConfig {
            secret: secret.and_then(Secret::new),
            datanode_secret: datanode_secret.and_then(Secret::new),
            ..fast_config()
        };
        let err = crail_store::namenode::RunningNamenode::start(config)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { key: k, .. } if k == key),
            "{err}"
        );
    }
    let mut text = crail_store::Config::from_toml("[security]\nsecret = \"0123456789\"");
    assert!(matches!(text, Err(Error::Config { .. })));
    text = crail_store::Config::from_toml("[security]\nsecret = \"0123456789abcdef\"");
    text.unwrap();
}

#[tokio::test]
async fn a_client_that_stalls_inside_a_request_is_told_and_dropped() {
    let nn = start_with(NamenodeConfig {
        frame_timeout: Duration::from_millis(300),
        ..fast_config()
    })
    .await;
    let mut stalled = raw(&nn).await;
    let lookup = testing::raw_frame(KIND_LOOKUP, 0, 1, &testing::lookup_body(b"/"));
    stalled.write_all(&lookup[..10]).await.unwrap();
    let mut buf = BytesMut::new();
    let (_, _, error) = reply(&mut stalled, &mut buf).await;
    assert!(
        matches!(&error, Some(Error::Timeout { what, .. }) if what == "the rest of a frame"),
        "{error:?}"
    );
    closed(&mut stalled).await;
    // Idle between requests is fine.
    let store = Store::connect(&client_config(&nn)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    store.stat("/").await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_with_a_notice_and_clients_reconnect() {
    let nn = start_with(NamenodeConfig {
        idle_timeout: Duration::from_millis(300),
        ..fast_config()
    })
    .await;
    let mut idle = raw(&nn).await;
    let mut buf = BytesMut::new();
    let (_, id, error) = reply(&mut idle, &mut buf).await;
    let error = error.unwrap();
    assert!(id == 0 && error.is_idle_close(), "{error}");
    closed(&mut idle).await;

    // A client idle past the limit finds its connection closed and opens a new one.
    let store = Store::connect(&client_config(&nn)).await.unwrap();
    store.create_dir("/d", &Default::default()).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store.stat("/d").await.unwrap();
    }

    // Every connection of the namenode's, both ends, probes a silent peer (TCP keepalive: its
    // timer is the one armed on an idle established connection).
    let keepalive = NamenodeConfig {
        idle_timeout: Duration::ZERO,
        ..fast_config()
    };
    let nn = start_with(keepalive).await;
    let store = Store::connect(&client_config(&nn)).await.unwrap();
    store.stat("/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let port = format!("{:04X}", nn.addr().port());
    let timers: Vec<String> = std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        // Established connections from or to the namenode's port.
        .filter(|f| f[3] == "01" && (f[1].ends_with(&port) || f[2].ends_with(&port)))
        .map(|f| f[5].clone())
        .collect();
    assert_eq!(timers.len(), 2, "{timers:?}");
    assert!(timers.iter().all(|t| t.starts_with("02:")), "{timers:?}");
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let nn = start().await;
    let good = client(&nn).await;
    let mut stream = raw(&nn).await;
    let mut header = testing::raw_frame(KIND_LOOKUP, 0, 9, &[]);
    header[..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    stream.write_all(&header).await.unwrap();
    let mut buf = BytesMut::new();
    let (_, id, error) = reply(&mut stream, &mut buf).await;
    assert_eq!(id, 0);
    assert!(
        matches!(error, Some(Error::FrameTooLarge { len, .. }) if len == 1 << 30),
        "{error:?}"
    );
    closed(&mut stream).await;
    good.stat("/").await.unwrap();
}

#[tokio::test]
async fn unknown_kinds_bad_bodies_and_bad_paths_are_answered_and_the_connection_lives_on() {
    let nn = start().await;
    let mut stream = raw(&nn).await;
    let mut buf = BytesMut::new();

    stream
        .write_all(&testing::raw_frame(999, 0, 1, b"??"))
        .await
        .unwrap();
    let (_, id, error) = reply(&mut stream, &mut buf).await;
    assert_eq!(id, 1);
    assert!(
        matches!(error, Some(Error::UnknownMessage { kind: 999 })),
        "{error:?}"
    );

    let garbage = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    stream
        .write_all(&testing::raw_frame(KIND_LOOKUP, 0, 2, &garbage))
        .await
        .unwrap();
    let (_, id, error) = reply(&mut stream, &mut buf).await;
    assert_eq!(id, 2);
    assert!(
        matches!(&error, Some(Error::Malformed { what, .. }) if what == "lookup"),
        "{error:?}"
    );

    let not_utf8 = testing::lookup_body(b"/\xff\xfe");
    stream
        .write_all(&testing::raw_frame(KIND_LOOKUP, 0, 3, &not_utf8))
        .await
        .unwrap();
    let (_, id, error) = reply(&mut stream, &mut buf).await;
    assert_eq!(id, 3);
    assert!(
        matches!(
            error,
            Some(Error::InvalidPath {
                problem: PathProblem::NotUtf8,
                ..
            })
        ),
        "{error:?}"
    );

    stream
        .write_all(&testing::raw_frame(
            KIND_HELLO,
            0,
            4,
            &testing::hello_body(1),
        ))
        .await
        .unwrap();
    let (_, id, error) = reply(&mut stream, &mut buf).await;
    assert_eq!(id, 4);
    assert!(
        matches!(error, Some(Error::UnexpectedMessage { .. })),
        "{error:?}"
    );

    // Pipelined: three requests in one write, three answers by id.
    let mut batch = Vec::new();
    for id in 10..13 {
        batch.extend(testing::raw_frame(
            KIND_LOOKUP,
            0,
            id,
            &testing::lookup_body(b"/"),
        ));
    }
    stream.write_all(&batch).await.unwrap();
    for id in 10..13 {
        let (kind, got, error) = reply(&mut stream, &mut buf).await;
        assert_eq!((kind, got), (KIND_LOOKUP, id));
        assert!(error.is_none(), "{error:?}");
    }
}

#[tokio::test]
async fn unknown_header_flags_close_the_connection() {
    let nn = start().await;
    let mut stream = raw(&nn).await;
    stream
        .write_all(&testing::raw_frame(
            KIND_LOOKUP,
            0x40,
            1,
            &testing::lookup_body(b"/"),
        ))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let (_, _, error) = reply(&mut stream, &mut buf).await;
    assert!(matches!(error, Some(Error::Malformed { .. })), "{error:?}");
    closed(&mut stream).await;
}

#[tokio::test]
async fn hostile_clients_do_not_disturb_the_others() {
    let nn = start().await;
    let addr = nn.addr();
    let vandal = tokio::spawn(async move {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for round in 0..200u64 {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                continue;
            };
            if round % 2 == 0 {
                let _ = testing::handshake(&mut stream).await;
            }
            let mut junk = vec![0u8; 512];
            for byte in &mut junk {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = seed as u8;
            }
            let _ = stream.write_all(&junk).await;
        }
    });
    let store = client(&nn).await;
    store.create_dir("/ok", &Default::default()).await.unwrap();
    for _ in 0..2000 {
        store.stat("/ok").await.unwrap();
    }
    vandal.await.unwrap();
    store.stat("/ok").await.unwrap();
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_as_busy() {
    let nn = start_with(NamenodeConfig {
        max_connections: 2,
        ..fast_config()
    })
    .await;
    let a = client(&nn).await;
    let _b = client(&nn).await;
    let err = Store::connect(&client_config(&nn)).await.unwrap_err();
    assert!(matches!(err, Error::ServerBusy { limit: 2 }), "{err}");
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Store::connect(&client_config(&nn)).await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let nn = start_with(NamenodeConfig {
        handshake_timeout: Duration::from_millis(200),
        ..fast_config()
    })
    .await;
    let mut stream = TcpStream::connect(nn.addr()).await.unwrap();
    let mut buf = BytesMut::new();
    let (_, _, error) = reply(&mut stream, &mut buf).await;
    assert!(matches!(error, Some(Error::Timeout { .. })), "{error:?}");
    closed(&mut stream).await;
}

#[tokio::test]
async fn shutdown_fails_outstanding_clients_once_their_reconnect_time_is_up() {
    let nn = start().await;
    let config = ClientConfig {
        reconnect_timeout: Duration::from_millis(300),
        ..client_config(&nn)
    };
    let store = Store::connect(&config).await.unwrap();
    store.stat("/").await.unwrap();
    nn.shutdown().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(2), store.stat("/"))
        .await
        .expect("a call after shutdown fails once the reconnect time is up")
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShuttingDown | Error::ConnectionLost { .. } | Error::Connect { .. }
        ),
        "{err}"
    );
    let err = Store::connect(&store.config().clone()).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

#[tokio::test]
async fn shutdown_completes_even_with_a_client_that_never_reads() {
    let nn = start().await;
    let store = client(&nn).await;
    store.create_dir("/d", &Default::default()).await.unwrap();
    for i in 0..200 {
        store
            .create(
                &format!("/d/{i:0>200}"),
                crail_store::NodeType::File,
                &Default::default(),
            )
            .await
            .unwrap();
    }
    // Pipeline listings of ~50 KB each and never read a reply: the server blocks writing.
    let mut stuck = raw(&nn).await;
    let list = testing::list_body(b"/d");
    let mut burst = Vec::new();
    for id in 1..=400 {
        burst.extend(testing::raw_frame(testing::KIND_LIST, 0, id, &list));
    }
    let _ = stuck.write_all(&burst).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(15), nn.shutdown())
        .await
        .expect("shutdown hung")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes through the frame decoder and every handler of a fresh namenode.
    #[test]
    fn arbitrary_bytes_never_break_the_namenode(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        testing::fuzz_requests(&bytes);
    }

    /// Well-framed requests of every kind with arbitrary bodies.
    #[test]
    fn arbitrary_bodies_of_every_kind_get_answers(
        kind in prop_oneof![1u16..=5, 16u16..=27, 48u16..=50, any::<u16>()],
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        testing::fuzz_requests(&testing::raw_frame(kind, 0, 1, &body));
    }
}

#[tokio::test]
async fn a_client_keeps_as_many_idle_buffers_as_its_config_allows() {
    let nn = start().await;
    for (idle, outstanding) in [(64 << 20, 4), (0, 4), (0, 1), (12 << 20, 1)] {
        let config = ClientConfig {
            idle_buffers: ByteSize(idle),
            outstanding,
            ..client_config(&nn)
        };
        let store = Store::connect(&config).await.unwrap();
        let pool = store.buffers();
        let size = pool.buffer_size() as u64;
        let keep = usize::try_from(idle / size).unwrap().max(4 * outstanding);
        let held: Vec<_> = (0..keep + 10).map(|_| pool.get()).collect();
        assert_eq!(pool.idle(), 0);
        drop(held);
        assert_eq!(
            pool.idle(),
            keep,
            "idle_buffers {idle}, outstanding {outstanding}"
        );
    }
}

#[tokio::test]
async fn silent_peers_hold_only_the_handshake_slots_and_only_for_the_handshake_timeout() {
    let nn = start_with(NamenodeConfig {
        max_handshakes: 2,
        handshake_timeout: Duration::from_millis(300),
        ..fast_config()
    })
    .await;
    // Two peers connect and say nothing: every handshake slot is theirs.
    let _silent = [
        TcpStream::connect(nn.addr()).await.unwrap(),
        TcpStream::connect(nn.addr()).await.unwrap(),
    ];
    // A client still gets in (it waits in the backlog until a silent peer's time is up),
    // and once in, it is served as any other.
    let store = Store::connect(&client_config(&nn)).await.unwrap();
    store.stat("/").await.unwrap();
}
