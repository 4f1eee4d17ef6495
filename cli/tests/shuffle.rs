//! The shuffle service in a real 3-node `crail cluster` (each node its own process on its own
//! 127.0.0.x, each running datanodes and the node's shuffle service): engines on every node
//! connect to their node's service, maps write and commit, reducers read; then faults: a
//! killed node, fetch failures naming the lost maps, recommits, replication, and the expiry
//! of a vanished application.

#![allow(clippy::unwrap_used)]

mod process;

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::time::Duration;

use crail_shuffle::{Error, Meta, ShuffleClient, ShuffleId};
use crail_store::Store;
use process::{Cluster, wait_until};

const HOSTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const SLOTS: usize = 2;
const RECORD: usize = 100;

/// A cluster whose namenode declares a silent datanode dead within about a second.
fn cluster(extra: &[&str]) -> Cluster {
    let mut args = vec!["--dram", "256MiB", "--keep-going", "--shuffle-slots", "2"];
    args.extend_from_slice(extra);
    Cluster::start_failing_fast(&args)
}

/// Per node: an engine's store client on the node's address and its shuffle client.
async fn engines(cluster: &Cluster, app: &str) -> Vec<ShuffleClient> {
    let mut out = Vec::new();
    for host in HOSTS {
        let store = cluster.store_on(host).await;
        let client = ShuffleClient::connect_local(store, app).await.unwrap();
        assert_eq!(client.host(), host);
        out.push(client);
    }
    out
}

/// Map `map`'s records, by partition: TeraSort-shaped, unique per map and record.
fn records(map: u32, partitions: u32) -> HashMap<u32, Vec<u8>> {
    let mut out: HashMap<u32, Vec<u8>> = HashMap::new();
    for i in 0..(300 + map * 11) {
        let mut r = [0u8; RECORD];
        let x = (u64::from(map) << 32 | u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        r[..8].copy_from_slice(&x.to_be_bytes());
        r[8..12].copy_from_slice(&map.to_be_bytes());
        r[12..16].copy_from_slice(&i.to_be_bytes());
        out.entry((x >> 40) as u32 % partitions)
            .or_default()
            .extend_from_slice(&r);
    }
    out
}

async fn run_map(client: &ShuffleClient, id: &ShuffleId, map: u32, attempt: u64, parts: u32) {
    let mut writer = client.map_writer(id, map, attempt).await.unwrap();
    for (partition, bytes) in records(map, parts) {
        writer.write(partition, &bytes).await.unwrap();
    }
    writer.commit().await.unwrap();
}

/// Runs maps `maps`, map m on node m % 3, all at once.
async fn run_maps(engines: &[ShuffleClient], id: &ShuffleId, maps: Range<u32>, parts: u32) {
    let tasks: Vec<_> = maps
        .map(|map| {
            let (client, id) = (engines[map as usize % 3].clone(), id.clone());
            tokio::spawn(async move { run_map(&client, &id, map, 0, parts).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn read(
    client: &ShuffleClient,
    id: &ShuffleId,
    parts: Range<u32>,
    maps: Option<Range<u32>>,
) -> Result<Vec<Vec<u8>>, Error> {
    let mut reader = client.read(id, parts, maps, 4).await?;
    // A chunk may end inside a record: each (partition, map)'s chunks, joined in order.
    let mut segments: std::collections::HashMap<(u32, u32), Vec<u8>> = Default::default();
    while let Some(chunk) = reader.next_chunk().await? {
        segments
            .entry((chunk.partition, chunk.map))
            .or_default()
            .extend_from_slice(&chunk.data);
    }
    let mut out = Vec::new();
    for bytes in segments.values() {
        out.extend(bytes.chunks(RECORD).map(<[u8]>::to_vec));
    }
    out.sort_unstable();
    Ok(out)
}

fn expected(maps: Range<u32>, parts: Range<u32>, partitions: u32) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = maps
        .flat_map(|m| records(m, partitions))
        .filter(|(p, _)| parts.contains(p))
        .flat_map(|(_, bytes)| bytes.chunks(RECORD).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_and_reducers_on_three_nodes_read_exactly_what_was_written() {
    let cluster = cluster(&["--orphan-ttl", "1s"]);
    let e = engines(&cluster, "app-a").await;
    let id = ShuffleId::new("app-a", 0);
    let (maps, partitions) = (30u32, 8u32);
    let used = |store: Store| async move {
        let info = store.cluster_info().await.unwrap();
        info.datanodes.iter().map(|d| d.used).sum::<u64>()
    };
    // The services' advertisements.
    let baseline = used(e[0].shuffles().store().clone()).await;
    e[0].register(&id, &Meta::new(maps, partitions, "fixed:10:90"))
        .await
        .unwrap();
    let err = e[1]
        .register(&id, &Meta::new(maps, partitions, "fixed:10:90"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered { .. }), "{err}");

    // A failed attempt (dropped mid-write) and a speculative one that loses.
    {
        let mut w = e[2].map_writer(&id, 0, 1).await.unwrap();
        w.write(0, &[0xee; RECORD * 5]).await.unwrap();
    }
    run_maps(&e, &id, 0..maps, partitions).await;
    let mut late = e[1].map_writer(&id, 0, 9).await.unwrap();
    for (p, bytes) in records(0, partitions) {
        late.write(p, &bytes).await.unwrap();
    }
    let err = late.commit().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyCommitted {
                map: 0,
                attempt: 9,
                winner: 0,
                ..
            }
        ),
        "{err}"
    );

    // Every reducer, on any node, reads its partition's records exactly.
    for p in 0..partitions {
        let got = read(&e[p as usize % 3], &id, p..p + 1, None).await.unwrap();
        assert!(
            got == expected(0..maps, p..p + 1, partitions),
            "partition {p}"
        );
    }
    // AQE: coalesced partitions, and a skewed one split by map ranges.
    for (parts, range) in [
        (2..6, Some(5..17)),
        (7..8, Some(0..1)),
        (0..8, Some(29..30)),
    ] {
        let got = read(&e[0], &id, parts.clone(), range.clone())
            .await
            .unwrap();
        assert!(got == expected(range.clone().unwrap(), parts.clone(), partitions));
    }
    // Map status as written.
    for (map, lengths) in e[1].map_statuses(&id, None).await.unwrap() {
        let written = records(map, partitions);
        for (p, len) in lengths.iter().enumerate() {
            assert_eq!(*len, written.get(&(p as u32)).map_or(0, Vec::len) as u64);
        }
    }

    // nodes x slots group files, each on its node's datanodes.
    let store = e[0].shuffles().store();
    let mut files = 0;
    for entry in store.list("/crail-shuffle/app-a/0/g").await.unwrap() {
        files += 1;
        let host = entry.name.split('-').next().unwrap().to_owned();
        let path = format!("/crail-shuffle/app-a/0/g/{}", entry.name);
        let file = store.lookup(&path).await.unwrap().into_file().unwrap();
        for block in file.all_block_locations().await.unwrap() {
            assert_eq!(block.host.to_string(), host, "{path}");
        }
    }
    assert_eq!(files, HOSTS.len() * SLOTS);

    // Bad input: typed errors, the shuffle unharmed.
    let unknown = ShuffleId::new("app-a", 7);
    let err = e[0].map_writer(&unknown, 0, 0).await.unwrap_err();
    assert!(matches!(err, Error::UnknownShuffle { .. }), "{err}");
    let err = e[0].map_writer(&id, maps, 0).await.unwrap_err();
    assert!(matches!(err, Error::MapOutOfRange { .. }), "{err}");
    let err = read(&e[0], &id, 0..partitions + 1, None).await.unwrap_err();
    assert!(matches!(err, Error::PartitionOutOfRange { .. }), "{err}");
    let err = e[0]
        .register(&ShuffleId::new("app-a", 1), &Meta::new(1, 1, "nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");

    // Unregister deletes the files.
    e[2].unregister(&id).await.unwrap();
    assert!(store.lookup("/crail-shuffle/app-a/0").await.is_err());
    // Every node lets go of its groups' leases once it sees the shuffle gone.
    wait_until("the blocks to be freed", || async {
        used(store.clone()).await == baseline
    })
    .await;

    // A vanished application's shuffles expire; a connected one's stay.
    let ghost = engines(&cluster, "ghost").await;
    let gid = ShuffleId::new("ghost", 0);
    ghost[0]
        .register(&gid, &Meta::new(3, 2, "kv"))
        .await
        .unwrap();
    run_maps(&ghost, &gid, 0..3, 2).await;
    e[0].register(&ShuffleId::new("app-a", 2), &Meta::new(1, 1, "kv"))
        .await
        .unwrap();
    drop(ghost);
    wait_until("the ghost app to expire", || async {
        store.lookup("/crail-shuffle/ghost").await.is_err()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(store.lookup("/crail-shuffle/app-a/2").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_fails_fetches_until_its_maps_are_recommitted_and_replicas_need_none() {
    let cluster = cluster(&[]);
    let e = engines(&cluster, "app-f").await;
    let (maps, partitions) = (12u32, 4u32);
    let single = ShuffleId::new("app-f", 0);
    let replicated = ShuffleId::new("app-f", 1);
    e[0].register(&single, &Meta::new(maps, partitions, "fixed:10:90"))
        .await
        .unwrap();
    e[0].register(
        &replicated,
        &Meta::new(maps, partitions, "fixed:10:90").replication(2),
    )
    .await
    .unwrap();
    // A shuffle registered on the node that dies: its metadata has copies elsewhere.
    let victims = ShuffleId::new("app-f", 2);
    e[2].register(&victims, &Meta::new(maps, partitions, "fixed:10:90"))
        .await
        .unwrap();
    run_maps(&e, &single, 0..maps, partitions).await;
    run_maps(&e, &replicated, 0..maps, partitions).await;
    run_maps(&e, &victims, 0..maps, partitions).await;
    assert!(
        read(&e[0], &replicated, 0..partitions, None).await.unwrap()
            == expected(0..maps, 0..partitions, partitions)
    );
    // e[1] keeps every commit record of `single` it reads: it must notice the replaced ones.
    assert!(
        read(&e[1], &single, 0..partitions, None).await.unwrap()
            == expected(0..maps, 0..partitions, partitions)
    );

    // Kill the node on 127.0.0.4 (its datanodes and its service) and wait for the namenode
    // to declare its datanodes dead.
    let store = e[0].shuffles().store().clone();
    cluster.kill_node(HOSTS[2]);
    wait_until(
        "the killed node's datanodes to be declared dead",
        || async {
            let info = store.cluster_info().await.unwrap();
            info.datanodes
                .iter()
                .filter(|d| d.host.to_string() == HOSTS[2])
                .all(|d| !d.alive)
        },
    )
    .await;

    // One copy: fetch-failed, naming exactly the maps that ran there.
    let lost: BTreeSet<u32> = (0..maps).filter(|m| m % 3 == 2).collect();
    let err = read(&e[0], &single, 0..partitions, None).await.unwrap_err();
    match &err {
        Error::FetchFailed { maps, .. } => {
            assert_eq!(maps.iter().copied().collect::<BTreeSet<_>>(), lost, "{err}");
        }
        other => panic!("expected a fetch failure, got {other}"),
    }
    // The engine runs them again elsewhere; their new attempts replace the lost commits.
    for &map in &lost {
        run_map(&e[map as usize % 2], &single, map, 1, partitions).await;
    }
    for engine in &e[..2] {
        let got = read(engine, &single, 0..partitions, None).await.unwrap();
        assert!(got == expected(0..maps, 0..partitions, partitions));
    }
    let commits = e[1].commits(&single, None).await.unwrap();
    for c in commits {
        assert_eq!(c.attempt, u64::from(lost.contains(&c.map)), "map {}", c.map);
    }
    // An intact commit is still never replaced.
    let mut again = e[0].map_writer(&single, 0, 5).await.unwrap();
    again.write(0, &[1; RECORD]).await.unwrap();
    let err = again.commit().await.unwrap_err();
    assert!(
        matches!(err, Error::AlreadyCommitted { winner: 0, .. }),
        "{err}"
    );

    // Two copies: the same loss needs no recompute.
    let got = read(&e[1], &replicated, 0..partitions, None).await.unwrap();
    assert!(got == expected(0..maps, 0..partitions, partitions));

    // The shuffle registered on the dead node is still known: its lost maps fail the fetch.
    let err = read(&e[0], &victims, 0..partitions, None)
        .await
        .unwrap_err();
    match &err {
        Error::FetchFailed { maps, .. } => {
            assert_eq!(maps.iter().copied().collect::<BTreeSet<_>>(), lost, "{err}");
        }
        other => panic!("expected a fetch failure, got {other}"),
    }
}

/// The shuffle protocol's lease request and group reply, as a client of another build would
/// spell them (only the fields this test needs).
mod raw {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Request {
        #[prost(message, optional, tag = "4")]
        pub(super) lease: Option<Lease>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Lease {
        #[prost(message, optional, tag = "1")]
        pub(super) shuffle: Option<ShuffleRef>,
        #[prost(uint32, tag = "2")]
        pub(super) map: u32,
        #[prost(uint64, tag = "3")]
        pub(super) attempt: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ShuffleRef {
        #[prost(string, tag = "1")]
        pub(super) app: String,
        #[prost(uint32, tag = "2")]
        pub(super) shuffle: u32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Reply {
        #[prost(message, optional, tag = "2")]
        pub(super) group: Option<Group>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Group {
        #[prost(message, repeated, tag = "4")]
        pub(super) files: Vec<GroupFile>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct GroupFile {
        #[prost(string, tag = "3")]
        pub(super) path: String,
    }
}

/// Bytes the service sends until it closes the connection (at most 5 s).
async fn rest(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_and_clients_that_vanish_mid_write_leave_the_service_whole() {
    use tokio::io::AsyncWriteExt;
    let cluster = cluster(&[]);
    let e = engines(&cluster, "app-b").await;
    let id = ShuffleId::new("app-b", 0);
    e[0].register(&id, &Meta::new(4, 2, "fixed:10:90"))
        .await
        .unwrap();
    let tcp = cluster
        .lines
        .iter()
        .find_map(|l| {
            let rest = l.strip_prefix("shuffle service on tcp:")?;
            rest.split(' ').next()?.parse::<std::net::SocketAddr>().ok()
        })
        .filter(|a| a.ip().to_string() == HOSTS[0])
        .unwrap();
    let endpoint = crail_node_service::Endpoint::Tcp(tcp);

    // A frame past the limit, or another protocol version, before the handshake: an error
    // and a closed connection; nothing else is affected.
    let mut huge = bytes::BytesMut::new();
    crail_store::wire::frame::put_header(&mut huge, 2, 0, 1, usize::MAX >> 1);
    let mut old_hello = bytes::BytesMut::new();
    crail_store::wire::frame::put_header(&mut old_hello, 2, 0, 0, 2);
    old_hello.extend_from_slice(&[0x08, 99]);
    for (bad, says) in [(&huge[..], "frame"), (&old_hello[..], "version")] {
        let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
        s.write_all(bad).await.unwrap();
        let answer = String::from_utf8_lossy(&rest(&mut s).await).to_lowercase();
        assert!(answer.contains(says), "{says}: {answer}");
    }
    // A request that does not decode: a typed failure, and the connection lives on.
    let options = crail_node_service::Options::new("shuffle", "app-b");
    let conn = crail_node_service::Connection::open(&endpoint, &options)
        .await
        .unwrap();
    let undecodable = raw::GroupFile {
        path: "\u{1}".repeat(3),
    };
    let err = conn.call::<_, raw::Reply>(&undecodable).await.unwrap_err();
    assert!(
        matches!(&err, crail_node_service::Error::Failed(f) if f.code == "invalid"),
        "{err}"
    );
    // A client without the cluster's secret when it has none is fine; one with a secret is
    // refused (the service asks none), before it can act.
    let secret = options
        .clone()
        .with_secret(crail_store::Secret::new("guess"));
    let refused = crail_node_service::Connection::open(&endpoint, &secret)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, crail_node_service::Error::Refused { .. }),
        "{refused}"
    );

    // Clients that borrow a group and vanish, more of them than the node has slots: each
    // group is taken back, and a map still gets one.
    let lease = raw::Request {
        lease: Some(raw::Lease {
            shuffle: Some(raw::ShuffleRef {
                app: "app-b".into(),
                shuffle: 0,
            }),
            map: 1,
            attempt: 1,
        }),
    };
    for _ in 0..SLOTS + 1 {
        let conn = crail_node_service::Connection::open(&endpoint, &options)
            .await
            .unwrap();
        let reply: raw::Reply = conn.call(&lease).await.unwrap();
        let group = reply.group.unwrap();
        assert!(
            group
                .files
                .iter()
                .any(|f| f.path.contains("app-b/0/g/127.0.0.2-")),
            "{group:?}"
        );
    }
    let writer = tokio::time::timeout(Duration::from_secs(10), e[0].map_writer(&id, 1, 2)).await;
    let mut writer = writer
        .expect("the vanished clients' groups came back")
        .unwrap();
    writer.write(1, &[7; RECORD]).await.unwrap();
    writer.commit().await.unwrap();
    for map in [0, 2, 3] {
        run_map(&e[1], &id, map, 0, 2).await;
    }
    let mut want = expected(0..4, 0..2, 2);
    want.retain(|r| !r[8..12].eq(&1u32.to_be_bytes()));
    want.push(vec![7; RECORD]);
    want.sort_unstable();
    assert!(read(&e[2], &id, 0..2, None).await.unwrap() == want);
}

/// Blocks of 64 KiB (chunks end inside records, at block ends), DRAM a quarter of the data
/// and flash behind it, host-first: every byte arrives and the benchmark's checks hold.
#[test]
fn shufflebench_runs_on_small_blocks_and_beyond_dram_into_flash() {
    let flash = tempfile::tempdir().unwrap();
    let cluster = Cluster::start_failing_fast(&[
        "--dram",
        "4MiB",
        "--block-size",
        "64KiB",
        "--flash",
        "64MiB",
        "--flash-dir",
        flash.path().to_str().unwrap(),
        "--tiering",
        "host-first",
        "--shuffle-slots",
        "2",
    ]);
    let out = cluster.ok(&[
        "shufflebench",
        "--size",
        "16MiB",
        "--shapes",
        "8x4",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row["bytes"], (16 << 20) / RECORD * RECORD, "{row}");
    let status = cluster.ok(&["status"]);
    assert!(status.contains("flash"), "{status}");
}

#[test]
fn shufflebench_measures_every_shape_and_refuses_what_cannot_run() {
    let cluster = cluster(&[]);
    let out = cluster.ok(&[
        "shufflebench",
        "--size",
        "8MiB",
        "--shapes",
        "8x4,16x8",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, (maps, partitions)) in rows.iter().zip([(8, 4), (16, 8)]) {
        assert_eq!(row["maps"], maps, "{row}");
        assert_eq!(row["partitions"], partitions, "{row}");
        assert_eq!(row["nodes"], 3, "{row}");
        assert_eq!(row["bytes"], (8 << 20) / RECORD * RECORD, "{row}");
        assert!(row["aggregate_mb_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["tcp_mb_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        // What the shuffle held: at least its bytes, every group file a block or more.
        let held = row["held_bytes"].as_u64().unwrap();
        assert!(held >= (8 << 20) / RECORD as u64 * RECORD as u64, "{row}");
        assert!(row["held_dram_bytes"].as_u64().unwrap() <= held, "{row}");
        assert!(row["peak_rss_bytes"].as_u64().unwrap() > 0, "{row}");
        // Every segment non-empty here, each recorded in at most 16 bytes (and its map's
        // record's head of at most 36 bytes shared among them).
        assert_eq!(row["segments"], maps * partitions, "{row}");
        let per_segment = row["record_bytes_per_segment"].as_f64().unwrap();
        let limit = 16.0 + 36.0 / f64::from(partitions);
        assert!(per_segment > 0.0 && per_segment <= limit, "{row}");
    }
    assert_eq!(rows[0]["times_first"], 1.0, "{out}");
    assert!(rows[1]["times_first"].as_f64().unwrap() > 0.0, "{out}");
    // Nothing of the benchmark's application is left behind.
    let left = cluster.ok(&["fs", "-ls", "/crail-shuffle"]);
    assert!(!left.contains("shufflebench"), "{left}");

    // Bad flags and runs that cannot fit: one line each, nothing started.
    for (args, says) in [
        (vec!["--shapes", "8"], "MAPSxPARTITIONS"),
        (vec!["--shapes", "0x4"], "at least 1"),
        (
            vec!["--size", "1KiB", "--shapes", "20x4"],
            "needs at least a record per map",
        ),
        (vec!["--size", "2GiB"], "free"),
        (vec!["--rounds", "0"], "at least 1"),
    ] {
        let mut all = vec!["shufflebench"];
        all.extend(args.iter().copied());
        let out = cluster.crail(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?}");
        assert!(err.contains(says), "{all:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{all:?}: {err}");
    }
}
