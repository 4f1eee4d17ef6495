//! The node-service layer with a real service on a real store: the store's handshake on TCP
//! and Unix sockets alike, typed failures, data both ways, file descriptors, sessions.

#![allow(clippy::unwrap_used)]

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crail_node::LocalCluster;
use crail_node_service::{
    self as node, Connection, Endpoint, Error, Failure, Listener, Options, Part, Served,
    ServerConfig, Sessions,
};
use crail_store::{ByteSize, Secret, Store};

/// The test service's messages.
#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    /// "echo", "full", "data", "fd", "slow".
    #[prost(string, tag = "1")]
    what: String,
    #[prost(uint64, tag = "2")]
    n: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Answer {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint64, tag = "2")]
    n: u64,
}

/// Echoes, fails with the store's StoreFull, echoes data back, sends a memory file.
#[derive(Debug)]
struct Echo {
    sessions: Sessions,
    closed: AtomicUsize,
}

impl node::Service for Echo {
    const NAME: &'static str = "echo";
    type Conn = ();

    fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    async fn serve(self: Arc<Self>, mut exchange: Served<()>) {
        let ask: Ask = exchange.request().await.unwrap();
        match ask.what.as_str() {
            "full" => {
                let full = crail_store::Error::StoreFull {
                    blocks: ask.n,
                    storage_class: Some(0),
                    location: None,
                };
                exchange.fail(&Failure::store(&full)).await;
            }
            "data" => {
                // Echoes every data frame back until the client's end message.
                let mut total = 0;
                while let Some(Ok(part)) = exchange.next::<Ask>().await {
                    match part {
                        Part::Data(bytes) => {
                            total += bytes.len() as u64;
                            exchange.data(bytes).await;
                        }
                        Part::Message(..) => break,
                    }
                }
                let done = Answer {
                    text: "done".into(),
                    n: total,
                };
                exchange.reply(&done).await;
            }
            "fd" => {
                let fd = rustix::fs::memfd_create("echo", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
                rustix::io::write(&fd, b"through the descriptor").unwrap();
                let answer = Answer {
                    text: "fd".into(),
                    n: 22,
                };
                exchange.reply_with_fd(&answer, fd).await;
            }
            _ => {
                let answer = Answer {
                    text: format!("{} from {}", ask.what, exchange.app()),
                    n: ask.n,
                };
                exchange.reply(&answer).await;
            }
        }
    }

    fn closed(&self, (): &()) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

struct Running {
    tcp: Endpoint,
    unix: Endpoint,
    echo: Arc<Echo>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _cluster: LocalCluster,
}

async fn start(secret: Option<&str>) -> Running {
    start_with(secret, ServerConfig::default().frame_timeout).await
}

async fn start_with(secret: Option<&str>, frame_timeout: Duration) -> Running {
    start_config(ServerConfig {
        secret: secret.and_then(Secret::new),
        frame_timeout,
        ..ServerConfig::default()
    })
    .await
}

async fn start_config(config: ServerConfig) -> Running {
    let cluster = LocalCluster::start(&["127.0.0.1"], ByteSize(64 << 20))
        .await
        .unwrap();
    let store = Store::connect(&cluster.client).await.unwrap();
    let echo = Arc::new(Echo {
        sessions: Sessions::new(store, "/echo", "127.0.0.1"),
        closed: AtomicUsize::new(0),
    });
    let tcp = Listener::Tcp(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    // Unique per server of this process: tests start at once, and two clock readings can meet.
    static SERVERS: AtomicUsize = AtomicUsize::new(0);
    let server = SERVERS.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "@crail-echo-test/{}/{}/{server}",
        std::process::id(),
        node::nonce()
    );
    let unix = Listener::unix(&name).unwrap();
    let endpoints = (tcp.endpoint().unwrap(), unix.endpoint().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(node::run(
        Arc::clone(&echo),
        config,
        vec![tcp, unix],
        async {
            let _ = stopped.await;
        },
    ));
    Running {
        tcp: endpoints.0,
        unix: endpoints.1,
        echo,
        _stop: stop,
        _cluster: cluster,
    }
}

fn options(secret: Option<&str>) -> Options {
    Options::new("echo", "app-1").with_secret(secret.and_then(Secret::new))
}

#[tokio::test]
async fn a_wrong_secret_is_refused_on_tcp_and_on_the_unix_socket() {
    let running = start(Some("s3cret")).await;
    assert!(
        matches!(running.unix, Endpoint::Unix(_)),
        "{}",
        running.unix
    );
    for endpoint in [&running.tcp, &running.unix] {
        let wrong = Connection::open(endpoint, &options(Some("guess")))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &wrong,
                Error::Refused { cause, .. } if matches!(**cause, crail_store::Error::AuthFailed { .. })
            ),
            "{endpoint}: {wrong}"
        );
        assert!(!wrong.is_lost(), "{wrong}");
        let none = Connection::open(endpoint, &options(None))
            .await
            .unwrap_err();
        assert!(
            matches!(
                &none,
                Error::Refused { cause, .. } if matches!(**cause, crail_store::Error::AuthFailed { .. })
            ),
            "{endpoint}: {none}"
        );
        let conn = Connection::open(endpoint, &options(Some("s3cret")))
            .await
            .unwrap();
        let answer: Answer = conn
            .call(&Ask {
                what: "hi".into(),
                n: 7,
            })
            .await
            .unwrap();
        assert_eq!(answer.text, "hi from app-1");
        assert_eq!(conn.host(), "127.0.0.1");
    }
    // A client with a secret refuses a service that asks none (no silent downgrade).
    let open = start(None).await;
    let downgrade = Connection::open(&open.tcp, &options(Some("s3cret")))
        .await
        .unwrap_err();
    assert!(matches!(downgrade, Error::Refused { .. }), "{downgrade}");
}

#[tokio::test]
async fn a_client_that_stalls_inside_a_frame_is_dropped_and_an_idle_one_is_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let running = start_with(None, Duration::from_millis(300)).await;
    let Endpoint::Tcp(addr) = &running.tcp else {
        panic!("not tcp")
    };
    let connect = || async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = bytes::BytesMut::new();
        crail_store::wire::handshake::client_of(
            &mut s,
            &mut buf,
            None,
            "stall test",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let mut open = bytes::BytesMut::new();
        crail_store::wire::frame::put_header(&mut open, 128, 0, 0, 0);
        s.write_all(&open).await.unwrap();
        s
    };
    let mut stalled = connect().await;
    let idle = Connection::open(&running.tcp, &options(None))
        .await
        .unwrap();
    // Half of a request's header, then nothing: dropped.
    let mut header = bytes::BytesMut::new();
    crail_store::wire::frame::put_header(&mut header, 130, 0, 1, 100);
    stalled.write_all(&header[..8]).await.unwrap();
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a stalled client was kept");
    // A client idle between frames for longer is not.
    let answer: Answer = idle
        .call(&Ask {
            what: "still there".into(),
            n: 1,
        })
        .await
        .unwrap();
    assert_eq!(answer.text, "still there from app-1");
}

#[tokio::test]
async fn another_service_and_a_bad_app_name_are_refused() {
    let running = start(None).await;
    let mut other = options(None);
    other.service = "shuffle";
    let err = Connection::open(&running.tcp, &other).await.unwrap_err();
    assert!(
        err.to_string().contains("the echo service answers there"),
        "{err}"
    );
    let mut bad = options(None);
    bad.app = "../etc".into();
    let err = Connection::open(&running.tcp, &bad).await.unwrap_err();
    assert!(
        matches!(&err, Error::Failed(f) if f.message.contains("app name")),
        "{err}"
    );
    let gone = Connection::open(&"127.0.0.1:1".parse().unwrap(), &options(None))
        .await
        .unwrap_err();
    assert!(gone.is_lost(), "{gone}");
}

#[tokio::test]
async fn a_store_error_keeps_its_type_across_the_hop() {
    let running = start(None).await;
    let conn = Connection::open(&running.tcp, &options(None))
        .await
        .unwrap();
    let err = conn
        .call::<_, Answer>(&Ask {
            what: "full".into(),
            n: 3,
        })
        .await
        .unwrap_err();
    match &err {
        Error::Failed(f)
            if matches!(
                f.store,
                Some(crail_store::Error::StoreFull { blocks: 3, .. })
            ) => {}
        other => panic!("{other:?}"),
    }
    assert!(!err.is_lost());
    // The connection lives on.
    let answer: Answer = conn
        .call(&Ask {
            what: "again".into(),
            n: 1,
        })
        .await
        .unwrap();
    assert_eq!(answer.n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_both_ways_and_descriptors_travel_on_unix() {
    let running = start(Some("k")).await;
    for endpoint in [&running.tcp, &running.unix] {
        let conn = Connection::open(endpoint, &options(Some("k")))
            .await
            .unwrap();
        // Many requests in flight on one connection from many tasks, answered by id.
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..256u64 {
            let conn = conn.clone();
            calls.spawn(async move {
                let answer: Answer = conn
                    .call(&Ask {
                        what: "n".into(),
                        n,
                    })
                    .await
                    .unwrap();
                assert_eq!(answer.n, n);
            });
        }
        while let Some(done) = calls.join_next().await {
            done.unwrap();
        }

        let mut exchange = conn
            .start(&Ask {
                what: "data".into(),
                n: 0,
            })
            .await
            .unwrap();
        let value: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        let sending = {
            let value = Bytes::from(value.clone());
            async {
                exchange.send_data(value).await.unwrap();
                exchange
                    .send(&Ask {
                        what: "end".into(),
                        n: 0,
                    })
                    .await
                    .unwrap();
            }
        };
        sending.await;
        let mut back = Vec::new();
        let total = loop {
            match exchange.next::<Answer>().await.unwrap() {
                Part::Data(bytes) => back.extend_from_slice(&bytes),
                Part::Message(answer, _) => break answer.n,
            }
        };
        assert_eq!(total, value.len() as u64);
        assert!(back == value, "the data came back changed");

        let fd = conn.call_with_fd_for_test().await;
        if conn.is_unix() {
            let fd = fd.expect("a descriptor over the Unix socket");
            let mut text = [0u8; 22];
            rustix::io::pread(fd.as_fd(), &mut text, 0).unwrap();
            assert_eq!(&text, b"through the descriptor");
        } else {
            assert!(fd.is_none());
        }
    }
}

#[tokio::test]
async fn a_closed_connection_is_reported_to_the_service_once() {
    let running = start(None).await;
    let conn = Connection::open(&running.unix, &options(None))
        .await
        .unwrap();
    let _: Answer = conn
        .call(&Ask {
            what: "x".into(),
            n: 0,
        })
        .await
        .unwrap();
    assert_eq!(running.echo.sessions.live(), vec!["app-1".to_owned()]);
    drop(conn);
    for _ in 0..200 {
        if running.echo.closed.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(running.echo.closed.load(Ordering::SeqCst), 1);
    assert!(running.echo.sessions.live().is_empty());
}

trait FdCall {
    async fn call_with_fd_for_test(&self) -> Option<std::os::fd::OwnedFd>;
}

impl FdCall for Connection {
    async fn call_with_fd_for_test(&self) -> Option<std::os::fd::OwnedFd> {
        let mut exchange = self
            .start(&Ask {
                what: "fd".into(),
                n: 0,
            })
            .await
            .unwrap();
        match exchange.next::<Answer>().await {
            Ok(Part::Message(answer, fd)) => {
                assert_eq!(answer.n, 22);
                fd
            }
            // Over TCP the service cannot send it: the connection fails the exchange.
            Ok(Part::Data(_)) => panic!("data"),
            Err(e) => {
                assert!(e.is_lost(), "{e}");
                None
            }
        }
    }
}

#[tokio::test]
async fn silent_peers_are_closed_and_clients_ping_to_stay() {
    use tokio::io::AsyncReadExt;
    let running = start_config(ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let Endpoint::Tcp(addr) = &running.tcp else {
        panic!("not tcp")
    };
    // A peer that opens a session and then says nothing: closed (no other limit closes an
    // open session that soon: frames have 30 s, the opening 5 s and it is done).
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let welcome = crail_store::wire::handshake::client_welcome(
        &mut silent,
        &mut buf,
        None,
        "idle test",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(welcome.idle_timeout, Duration::from_millis(300));
    // Its session opened (so only the idle limit can end it within the 10 s below).
    let mut open = bytes::BytesMut::new();
    crail_store::wire::frame::put_header(&mut open, 128, 0, 0, 0);
    tokio::io::AsyncWriteExt::write_all(&mut silent, &open)
        .await
        .unwrap();
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "a silent peer was kept");

    // A client idle for several limits in a row keeps its connection (it pings), on TCP and
    // on the Unix socket.
    for endpoint in [&running.tcp, &running.unix] {
        let conn = Connection::open(endpoint, &options(None)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(!conn.is_closed(), "{endpoint}: closed while idle");
        let answer: Answer = conn
            .call(&Ask {
                what: "still here".into(),
                n: 1,
            })
            .await
            .unwrap();
        assert_eq!(answer.text, "still here from app-1");
    }
}

#[tokio::test]
async fn remote_peers_that_fill_the_tcp_port_leave_the_unix_socket_free() {
    let running = start_config(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut quick = options(None);
    quick.timeout = Duration::from_millis(500);
    let _held: Vec<Connection> = vec![
        Connection::open(&running.tcp, &options(None))
            .await
            .unwrap(),
        Connection::open(&running.tcp, &options(None))
            .await
            .unwrap(),
    ];
    // The TCP port is full: a third peer is not served (its handshake or its opening, as the
    // kernel's backlog takes its connection, gets no answer).
    let err = Connection::open(&running.tcp, &quick).await.unwrap_err();
    let timed_out = match &err {
        Error::Timeout { .. } => true,
        Error::Refused { cause, .. } => matches!(**cause, crail_store::Error::Timeout { .. }),
        _ => false,
    };
    assert!(timed_out, "{err}");
    // The node's own engines still are.
    let local = Connection::open(&running.unix, &options(None))
        .await
        .unwrap();
    let answer: Answer = local
        .call(&Ask {
            what: "local".into(),
            n: 1,
        })
        .await
        .unwrap();
    assert_eq!(answer.text, "local from app-1");
}
