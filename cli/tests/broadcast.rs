//! Broadcast variables in a real 3-node `crail cluster` (each node its own process on its own
//! 127.0.0.x, each running datanodes and the node's broadcast service): engines on every node
//! put and get through their node's service; each node fetches a variable once however many
//! of its engines read it; destroy and an application's end free the blocks (seen with
//! `crail fs -df`) and every node's copy; then the faults.

#![allow(clippy::unwrap_used)]

mod process;

use std::time::Duration;

use crail_broadcast::{BroadcastClient, Endpoint, Error, RemoteReader, VarId};
use process::{Cluster, wait_until};
use tokio::io::AsyncWriteExt;

const HOSTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(10);

/// A cluster whose namenode declares a silent datanode dead within about a second.
fn cluster(dram: &str) -> Cluster {
    Cluster::start_failing_fast(&["--dram", dram, "--keep-going"])
}

/// Per node: an engine's broadcast client, found through a store client on the node's
/// address (so on the service's Unix socket: reads map the node's copy).
async fn engines(cluster: &Cluster, app: &str) -> Vec<BroadcastClient> {
    let mut out = Vec::new();
    for host in HOSTS {
        let store = cluster.store_on(host).await;
        let client = BroadcastClient::connect_local(&store, app).await.unwrap();
        assert_eq!(client.host(), host);
        out.push(client);
    }
    out
}

/// Per node: a client of the node's service over TCP, as from another host (reads stream).
async fn tcp_engines(cluster: &Cluster, app: &str) -> Vec<BroadcastClient> {
    let mut out = Vec::new();
    for host in HOSTS {
        let store = cluster.store_on(host).await;
        let endpoints = crail_node_service::advertised(&store, crail_broadcast::ROOT, host)
            .await
            .unwrap();
        let tcp = endpoints
            .iter()
            .find(|e| matches!(e, Endpoint::Tcp(_)))
            .unwrap();
        let client = BroadcastClient::connect(tcp, app, &Default::default())
            .await
            .unwrap();
        assert_eq!(client.host(), host);
        out.push(client);
    }
    out
}

/// `len` bytes unique to `seed`.
fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads `var` through `client`: its size and crc32c, checked against the size announced.
async fn read(client: &BroadcastClient, var: &VarId) -> Result<(u64, u32), Error> {
    let reader = client.get(var, WAIT).await?;
    read_rest(reader, 0, 0).await
}

/// The rest of a reader's value, after `len` bytes whose crc32c is `crc`.
async fn read_rest(
    mut reader: RemoteReader,
    mut len: u64,
    mut crc: u32,
) -> Result<(u64, u32), Error> {
    let var = reader.var().clone();
    while let Some(chunk) = reader.next_chunk().await? {
        len += chunk.len() as u64;
        crc = crc32c::crc32c_append(crc, &chunk);
    }
    assert_eq!(len, reader.size(), "{var}: the value ended early");
    Ok((len, crc))
}

/// Bytes used in the store as `crail fs -df -b` reports them.
fn used(cluster: &Cluster) -> u64 {
    process::cell(&cluster.ok(&["fs", "-df", "-b"]), "total", 4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_up_to_hundreds_of_mib_reach_every_node_whole_and_once() {
    let cluster = cluster("512MiB");
    let e = engines(&cluster, "app-a").await;
    let before = used(&cluster);

    // Sizes around the 1 MiB block, and one of several hundred MiB; each put from a
    // different node.
    let sizes = [0, 1, MIB - 1, MIB + 1, 5 * MIB + 7, 300 * MIB];
    let mut vars = Vec::new();
    for (i, size) in sizes.into_iter().enumerate() {
        let var = VarId::new("app-a", format!("b{i}"));
        let data = value(i as u64, size);
        let put = e[i % 3].put(&var, &data).await.unwrap();
        assert_eq!(put, size as u64);
        vars.push((var, size as u64, crc32c::crc32c(&data)));
    }
    let blocks: u64 = sizes.iter().map(|s| s.div_ceil(MIB) as u64).sum();
    assert_eq!(used(&cluster) - before, blocks * MIB as u64);

    // Three readers on each node at once, for every variable: two through the node's
    // shared memory, one streamed over TCP.
    let tcp = tcp_engines(&cluster, "app-a").await;
    for (var, size, crc) in &vars {
        let mut readers = Vec::new();
        for (local, remote) in e.iter().zip(&tcp) {
            for (client, shared) in [(local, true), (local, true), (remote, false)] {
                let (client, var) = (client.clone(), var.clone());
                readers.push(tokio::spawn(async move {
                    let reader = client.get(&var, WAIT).await?;
                    assert_eq!(reader.is_shared(), shared, "{var} on {}", client.host());
                    read_rest(reader, 0, 0).await
                }));
            }
        }
        for r in readers {
            assert_eq!(r.await.unwrap().unwrap(), (*size, *crc), "{var}");
        }
        for client in &e {
            assert_eq!(
                client.fetches_of(var).await.unwrap(),
                1,
                "{var} on {}",
                client.host()
            );
        }
    }
    // Small values are whole byte for byte too (the crc above covers the big one).
    assert_eq!(
        e[2].read_all(&vars[2].0, WAIT).await.unwrap(),
        value(2, MIB - 1)
    );
    for client in &e {
        let stats = client.stats().await.unwrap();
        assert_eq!(stats.fetches, sizes.len() as u64, "{}", client.host());
        assert_eq!(stats.cached, sizes.len() as u64, "{}", client.host());
        assert_eq!(
            stats.fetched_bytes,
            sizes.iter().sum::<usize>() as u64,
            "{}",
            client.host()
        );
    }

    // Destroy: the blocks are freed, every node's copy is dropped, gets fail; readers that
    // had begun (mapped or streamed) finish whole.
    let (big, big_size, big_crc) = vars.pop().unwrap();
    let mut begun = Vec::new();
    for client in [&e[0], &tcp[1]] {
        let mut reader = client.get(&big, WAIT).await.unwrap();
        let first = reader.next_chunk().await.unwrap().unwrap();
        begun.push((reader, first.len() as u64, crc32c::crc32c(&first)));
    }
    let held = used(&cluster);
    e[1].destroy(&big).await.unwrap();
    for (reader, len, crc) in begun {
        assert_eq!(
            read_rest(reader, len, crc).await.unwrap(),
            (big_size, big_crc)
        );
    }
    assert_eq!(
        held - used(&cluster),
        big_size.div_ceil(MIB as u64) * MIB as u64
    );
    for client in &e {
        assert_eq!(client.stats().await.unwrap().cached, vars.len() as u64);
        assert!(matches!(
            client.get(&big, WAIT).await,
            Err(Error::UnknownVariable { var }) if var == big
        ));
    }
    assert!(matches!(
        e[0].destroy(&big).await,
        Err(Error::UnknownVariable { .. })
    ));

    // Put again under the same name: a new value, fetched again by every node.
    let again = value(99, 2 * MIB);
    e[2].put(&big, &again).await.unwrap();
    for client in &e {
        assert_eq!(client.read_all(&big, WAIT).await.unwrap(), again);
        assert_eq!(client.fetches_of(&big).await.unwrap(), 2);
    }

    // The application ends: all of its variables go, and the store is as it was.
    let other = VarId::new("app-b", "kept");
    e[0].put(&other, b"still here").await.unwrap();
    e[0].remove_app("app-a").await.unwrap();
    for client in &e {
        assert_eq!(client.stats().await.unwrap().cached, 0, "{}", client.host());
        for (var, _, _) in &vars {
            assert!(matches!(
                client.get(var, WAIT).await,
                Err(Error::UnknownVariable { .. })
            ));
        }
        assert_eq!(client.read_all(&other, WAIT).await.unwrap(), b"still here");
    }
    e[0].remove_app("app-b").await.unwrap();
    assert_eq!(used(&cluster), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_faults_get_typed_errors_and_leave_nothing_behind() {
    let cluster = cluster("256MiB");
    let e = engines(&cluster, "app-f").await;
    let before = used(&cluster);
    let var = |id: &str| VarId::new("app-f", id);

    // Unknown, badly named, already there.
    assert!(matches!(
        e[0].get(&var("nope"), WAIT).await,
        Err(Error::UnknownVariable { .. })
    ));
    assert!(matches!(
        e[0].put(&VarId::new("app-f", "../x"), b"x").await,
        Err(Error::Invalid { .. })
    ));
    e[0].put(&var("v"), b"one").await.unwrap();
    let exists = e[1].put(&var("v"), b"two").await.unwrap_err();
    assert!(matches!(exists, Error::AlreadyExists { .. }), "{exists}");
    assert!(exists.to_string().contains("app-f/v"), "{exists}");
    assert_eq!(e[2].read_all(&var("v"), WAIT).await.unwrap(), b"one");

    // A get during a put waits for the whole value, or says it is still being written.
    let data = value(7, 6 * MIB);
    let (mut feed, mut source) = tokio::io::duplex(1 << 16);
    let putter = {
        let client = e[0].clone();
        tokio::spawn(async move { client.put_stream(&var("slow"), &mut source).await })
    };
    feed.write_all(&data[..3 * MIB]).await.unwrap();
    // The bytes may all sit in the Unix socket's buffer before the service has begun the put;
    // until it has, the variable is unknown.
    let deadline = std::time::Instant::now() + WAIT;
    let early = loop {
        match e[1].get(&var("slow"), Duration::from_millis(300)).await {
            Err(Error::UnknownVariable { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other,
        }
    };
    assert!(
        matches!(early, Err(Error::BeingWritten { .. })),
        "{early:?}"
    );
    let waiting = {
        let client = e[2].clone();
        tokio::spawn(async move { client.read_all(&var("slow"), WAIT).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    feed.write_all(&data[3 * MIB..]).await.unwrap();
    drop(feed);
    assert_eq!(putter.await.unwrap().unwrap(), data.len() as u64);
    assert_eq!(waiting.await.unwrap().unwrap(), data);

    // A client that goes away mid-put leaves nothing.
    let (mut feed, mut source) = tokio::io::duplex(1 << 16);
    let putter = {
        let client = e[1].clone();
        tokio::spawn(async move { client.put_stream(&var("torn"), &mut source).await })
    };
    feed.write_all(&data[..4 * MIB]).await.unwrap();
    putter.abort();
    let _ = putter.await;
    wait_until("the torn put to be gone", || async {
        matches!(
            e[0].get(&var("torn"), Duration::ZERO).await,
            Err(Error::UnknownVariable { .. })
        )
    })
    .await;

    // Larger than the free capacity: a typed error, nothing left, and the store still takes
    // a put that fits.
    let full = e[2]
        .put(&var("huge"), &value(8, 800 * MIB))
        .await
        .unwrap_err();
    assert!(matches!(full, Error::StoreFull { .. }), "{full}");
    assert!(full.to_string().contains("app-f/huge"), "{full}");
    assert!(matches!(
        e[0].get(&var("huge"), WAIT).await,
        Err(Error::UnknownVariable { .. })
    ));
    e[2].put(&var("after"), &data).await.unwrap();

    // Garbage on a service's socket: dropped, and the service serves the next client.
    {
        let addr = cluster
            .lines
            .iter()
            .find_map(|l| {
                l.strip_prefix("broadcast service on tcp:")
                    .and_then(|rest| rest.split_whitespace().next())
            })
            .unwrap()
            .to_owned();
        let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
        raw.write_all(&[0xff; 64]).await.unwrap();
        drop(raw);
    }
    assert_eq!(e[0].read_all(&var("after"), WAIT).await.unwrap(), data);
    e[0].destroy(&var("after")).await.unwrap();
    e[0].destroy(&var("slow")).await.unwrap();
    e[0].destroy(&var("v")).await.unwrap();
    assert_eq!(used(&cluster), before);

    // A node dies mid-read: its reader, and a later reader elsewhere, get errors naming the
    // variable.
    let big = var("big");
    e[0].put(&big, &value(9, 64 * MIB)).await.unwrap();
    let mut reader = e[2].get(&big, WAIT).await.unwrap();
    reader.next_chunk().await.unwrap().unwrap();
    cluster.kill_node(HOSTS[2]);
    let mid = loop {
        match reader.next_chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the whole value came through a dead node"),
            Err(e) => break e,
        }
    };
    assert!(matches!(mid, Error::Unreadable { .. }), "{mid}");
    assert!(mid.to_string().contains("app-f/big"), "{mid}");
    let later = read(&e[0], &big).await.unwrap_err();
    assert!(matches!(later, Error::Unreadable { .. }), "{later}");
    assert!(later.to_string().contains("app-f/big"), "{later}");
}

#[test]
fn broadcastbench_measures_both_ways_and_refuses_what_cannot_run() {
    let cluster = cluster("128MiB");
    let out = cluster.ok(&[
        "broadcastbench",
        "--size",
        "8MiB",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["nodes"], 3, "{out}");
    assert_eq!(row["readers_per_node"], 2, "{out}");
    // Each node fetched the value once; each of the 6 single-source readers read it whole.
    assert_eq!(row["broadcast_store_bytes"], 3 * 8 * MIB as u64, "{out}");
    assert_eq!(
        row["single_source_store_bytes"],
        6 * 8 * MIB as u64,
        "{out}"
    );
    assert!(row["broadcast_secs"].as_f64().unwrap() > 0.0, "{out}");
    // Nothing is left behind.
    let ls = cluster.ok(&["fs", "-ls", "/crail-broadcast"]);
    assert!(!ls.contains("broadcastbench-"), "{ls}");

    for (args, says) in [
        (&["--readers", "0"][..], "at least 1"),
        (&["--size", "0"][..], "above 0"),
        (&["--size", "100GiB"][..], "free"),
    ] {
        let out = cluster.crail(&[&["broadcastbench"][..], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
