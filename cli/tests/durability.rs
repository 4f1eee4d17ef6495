//! Durability against real processes: a `crail namenode` with a journal killed with SIGKILL
//! and started again on it, `crail node` processes that live through that and through a long
//! pause of their own (SIGSTOP), and the clients that wait for them.

#![allow(clippy::unwrap_used)]

mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crail_shuffle::{Meta, ShuffleClient, ShuffleId};
use crail_store::{ClientConfig, CreateOptions, Store};
use process::{Process, wait_until};

const HOSTS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
const RECORD: usize = 100;

/// A namenode on `listen` keeping its namespace in `journal`, its log in `log`.
fn namenode(listen: &str, journal: &Path, log: &Path, env: &[(&str, &str)]) -> (Process, String) {
    Process::start_with(
        &[
            "namenode",
            "--listen",
            listen,
            "--journal",
            journal.to_str().unwrap(),
        ],
        "namenode listening on ",
        env,
        Some(log),
    )
}

/// A node on `host` (DRAM and both services) for the namenode at `namenode`.
fn node(namenode: &str, host: &str, log: &Path) -> Process {
    Process::start_with(
        &[
            "node",
            "--namenode",
            namenode,
            "--host",
            host,
            "--dram",
            "128MiB",
            "--shuffle-port",
            "0",
            "--broadcast-port",
            "0",
            "--shuffle-slots",
            "2",
        ],
        "datanode listening on ",
        &[],
        Some(log),
    )
    .0
}

fn client(namenode: &str, host: &str) -> ClientConfig {
    ClientConfig {
        namenode: namenode.into(),
        ..ClientConfig::default()
    }
    .with_local_host(host.parse().unwrap())
}

/// Waits until every datanode the namenode knows is alive (registered again after a restart
/// or a pause).
async fn all_alive(store: &Store, expected: usize) {
    wait_until("every datanode alive", || async {
        store.cluster_info().await.is_ok_and(|info| {
            info.datanodes.iter().filter(|d| d.alive).count() == expected
                && info.datanodes.iter().all(|d| d.alive)
        })
    })
    .await;
}

/// Map `map`'s records, by partition, unique per map and record.
fn records(map: u32, partitions: u32) -> HashMap<u32, Vec<u8>> {
    let mut out: HashMap<u32, Vec<u8>> = HashMap::new();
    for i in 0..(200 + map * 7) {
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

/// Runs map `map` as an engine would: a failed attempt (its node's group broken by the
/// restart, the namenode not back yet) is run again as the next attempt.
async fn run_map(client: &ShuffleClient, id: &ShuffleId, map: u32, parts: u32) -> u64 {
    let mut failures = Vec::new();
    for attempt in 0..5 {
        let result = async {
            let mut writer = client.map_writer(id, map, attempt).await?;
            for (partition, bytes) in records(map, parts) {
                writer.write(partition, &bytes).await?;
            }
            writer.commit().await
        }
        .await;
        match result {
            Ok(_) => return attempt,
            Err(e) => failures.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("map {map} failed every attempt: {failures:?}");
}

async fn read_all(client: &ShuffleClient, id: &ShuffleId, parts: u32) -> Vec<Vec<u8>> {
    let mut reader = client.read(id, 0..parts, None, 4).await.unwrap();
    let mut segments: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        segments
            .entry((chunk.partition, chunk.map))
            .or_default()
            .extend_from_slice(&chunk.data);
    }
    let mut out: Vec<Vec<u8>> = segments
        .values()
        .flat_map(|b| b.chunks(RECORD).map(<[u8]>::to_vec))
        .collect();
    out.sort_unstable();
    out
}

fn expected(maps: u32, parts: u32) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..maps)
        .flat_map(|m| records(m, parts))
        .flat_map(|(_, b)| b.chunks(RECORD).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .collect();
    out.sort_unstable();
    out
}

/// Bytes unique to file `i`.
fn content(i: usize) -> Vec<u8> {
    (0..(i * 70_001 % 3_000_000 + 1))
        .map(|j| (j as u64 * 31 + i as u64 * 7) as u8)
        .collect()
}

/// Writes `count` files of [`content`] under `dir`.
async fn write_files(store: &Store, dir: &str, count: usize) {
    store
        .create_dir(dir, &CreateOptions::default())
        .await
        .unwrap();
    for i in 0..count {
        store
            .write_file(
                &format!("{dir}/{i}"),
                &content(i),
                &CreateOptions::default(),
            )
            .await
            .unwrap();
    }
}

async fn read_file(store: &Store, path: &str) -> crail_store::Result<Vec<u8>> {
    store.lookup(path).await?.into_file()?.read_to_end().await
}

/// Every file [`write_files`] wrote under `dir` reads back byte-exact.
async fn check_files(store: &Store, dir: &str, count: usize, logs: &Logs) {
    for i in 0..count {
        let got = read_file(store, &format!("{dir}/{i}")).await.unwrap();
        assert!(got == content(i), "{dir}/{i} byte-exact\n{}", logs.dump());
    }
}

struct Logs(tempfile::TempDir);

impl Logs {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Every log, for a failure message.
    fn dump(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.0.path()).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out += &format!("--- {}\n", path.display());
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namenode_killed_mid_shuffle_comes_back_with_every_commit() {
    let (logs, journal) = (Logs::new(), tempfile::tempdir().unwrap());
    let (mut nn, addr) = namenode("127.0.0.1:0", journal.path(), &logs.path("namenode-1"), &[]);
    let _nodes: Vec<Process> = HOSTS
        .iter()
        .map(|h| node(&addr, h, &logs.path(&format!("node-{h}"))))
        .collect();
    let mut engines = Vec::new();
    for host in HOSTS {
        let store = Store::connect(&client(&addr, host)).await.unwrap();
        engines.push(ShuffleClient::connect_local(store, "app").await.unwrap());
    }
    let store = engines[0].shuffles().store().clone();
    // Plain files and directories besides.
    write_files(&store, "/data", 6).await;
    let id = ShuffleId::new("app", 0);
    let (maps, parts) = (24u32, 6u32);
    engines[0]
        .register(&id, &Meta::new(maps, parts, "fixed:10:90"))
        .await
        .unwrap();
    for map in 0..12 {
        assert_eq!(
            run_map(&engines[map as usize % 2], &id, map, parts).await,
            0
        );
    }
    // Map 12 is half written when the namenode dies.
    let mut half = engines[0].map_writer(&id, 12, 0).await.unwrap();
    for (partition, bytes) in records(12, parts).into_iter().take(3) {
        half.write(partition, &bytes).await.unwrap();
    }

    nn.signal("-KILL");
    nn.kill();
    let started = Instant::now();
    let (_nn, again) = namenode(&addr, journal.path(), &logs.path("namenode-2"), &[]);
    assert_eq!(again, addr);
    // Files read at once: the namenode answers that their datanodes are not back yet, and the
    // client waits for them (a short stall, not a loss).
    check_files(&store, "/data", 6, &logs).await;
    eprintln!("files read back {:?} after the restart", started.elapsed());
    // The half-written map can no longer commit (its group's lease ended with the namenode):
    // a typed error, and its next attempt commits.
    let err = half
        .commit()
        .await
        .expect_err("the lease ended with the namenode");
    eprintln!("half-written map after the restart: {err}");
    all_alive(&store, HOSTS.len()).await;
    eprintln!("datanodes back {:?} after the restart", started.elapsed());
    for map in 12..maps {
        run_map(&engines[map as usize % 2], &id, map, parts).await;
    }
    let got = read_all(&engines[1], &id, parts).await;
    assert!(
        got == expected(maps, parts),
        "every map read back exactly once ({} records, {} expected)\n{}",
        got.len(),
        expected(maps, parts).len(),
        logs.dump()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_paused_past_its_death_comes_back_with_its_blocks() {
    let (logs, journal) = (Logs::new(), tempfile::tempdir().unwrap());
    let (_nn, addr) = namenode("127.0.0.1:0", journal.path(), &logs.path("namenode"), &[]);
    let nodes: Vec<Process> = HOSTS
        .iter()
        .map(|h| node(&addr, h, &logs.path(&format!("node-{h}"))))
        .collect();
    // Written from the first node: its blocks on its own datanode.
    let store = Store::connect(&client(&addr, HOSTS[0])).await.unwrap();
    all_alive(&store, HOSTS.len()).await;
    write_files(&store, "/p", 8).await;
    let first = store
        .lookup("/p/3")
        .await
        .unwrap()
        .into_file()
        .unwrap()
        .all_block_locations()
        .await
        .unwrap();
    assert!(first.iter().all(|b| b.host.to_string() == HOSTS[0]));

    nodes[0].signal("-STOP");
    let observer = Store::connect(&client(&addr, HOSTS[1])).await.unwrap();
    wait_until("the paused datanode declared dead", || async {
        observer
            .cluster_info()
            .await
            .is_ok_and(|info| info.datanodes.iter().any(|d| !d.alive))
    })
    .await;
    let lost = read_file(&observer, "/p/3").await.unwrap_err();
    assert!(
        matches!(lost, crail_store::Error::LostBlocks { .. }),
        "{lost}"
    );
    // Thirty seconds in all, as a swap storm or a VM migration might.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(Duration::from_secs(17))).await;
    nodes[0].signal("-CONT");
    all_alive(&observer, HOSTS.len()).await;
    check_files(&observer, "/p", 8, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_entries_survive_a_restart() {
    let (logs, journal) = (Logs::new(), tempfile::tempdir().unwrap());
    let (mut nn, addr) = namenode("127.0.0.1:0", journal.path(), &logs.path("namenode-1"), &[]);
    let store = Store::connect(&client(&addr, "127.0.0.1")).await.unwrap();
    let (dirs, per_dir) = (1000usize, 1000usize);
    let started = Instant::now();
    let options = CreateOptions::default();
    for d in 0..dirs {
        store.create_dir(&format!("/d{d}"), &options).await.unwrap();
    }
    // Many creates in flight at once: the journal syncs them in groups.
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut pending = futures_util::stream::FuturesUnordered::new();
                for d in (t..dirs).step_by(16) {
                    for e in 0..per_dir - 1 {
                        let store = store.clone();
                        pending.push(async move {
                            store
                                .create_dir(&format!("/d{d}/e{e}"), &CreateOptions::default())
                                .await
                                .map(|_| ())
                        });
                        if pending.len() >= 32 {
                            futures_util::StreamExt::next(&mut pending)
                                .await
                                .unwrap()
                                .unwrap();
                        }
                    }
                }
                while let Some(done) = futures_util::StreamExt::next(&mut pending).await {
                    done.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let entries = dirs * per_dir - dirs + dirs;
    eprintln!("{entries} entries created in {:?}", started.elapsed());
    let journal_bytes: u64 = std::fs::read_dir(journal.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    nn.signal("-KILL");
    nn.kill();
    let started = Instant::now();
    let (_nn, _) = namenode(&addr, journal.path(), &logs.path("namenode-2"), &[]);
    let info = store.cluster_info().await.unwrap();
    let restart = started.elapsed();
    eprintln!(
        "restart with {} nodes ({journal_bytes} bytes of journal and snapshot): {restart:?}",
        info.nodes
    );
    assert_eq!(info.nodes as usize, entries + 1, "every entry and the root");
    let listed = store.list(&format!("/d{}", dirs - 1)).await.unwrap();
    assert_eq!(listed.len(), per_dir - 1);
    let text = std::fs::read_to_string(logs.path("namenode-2")).unwrap();
    assert!(
        text.contains("namespace restored from the journal"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shuffle_service_is_a_lost_node_within_the_deadline() {
    let (logs, journal) = (Logs::new(), tempfile::tempdir().unwrap());
    let (_nn, addr) = namenode("127.0.0.1:0", journal.path(), &logs.path("namenode"), &[]);
    let node = node(&addr, HOSTS[0], &logs.path("node"));
    let deadline = Duration::from_secs(2);
    let config = ClientConfig {
        rpc_timeout: deadline,
        ..client(&addr, HOSTS[0])
    };
    let store = Store::connect(&config).await.unwrap();
    let engine = ShuffleClient::connect_local(store, "app").await.unwrap();
    let id = ShuffleId::new("app", 0);
    engine
        .register(&id, &Meta::new(2, 2, "fixed:10:90"))
        .await
        .unwrap();
    // Alive: a call that waits is not taken for a hang (the service answers pings).
    tokio::time::sleep(2 * deadline).await;
    assert_eq!(run_map(&engine, &id, 0, 2).await, 0);

    node.signal("-STOP");
    let started = Instant::now();
    let err = tokio::time::timeout(4 * deadline, engine.map_writer(&id, 1, 0))
        .await
        .expect("a hung service is not waited for forever")
        .unwrap_err();
    let waited = started.elapsed();
    node.signal("-CONT");
    eprintln!("hung service noticed after {waited:?}: {err}");
    let crail_shuffle::Error::Service(service) = &err else {
        panic!("not a service error: {err}");
    };
    // What the SDK reports as NodeLost, for the engine to fail over.
    assert!(service.is_lost(), "{err}");
}

/// A flash datanode on `host` over the file `path`.
fn flash_datanode(namenode: &str, host: &str, path: &Path, log: &Path) -> Process {
    Process::start_with(
        &[
            "datanode",
            "--namenode",
            namenode,
            "--tier",
            "flash",
            "--path",
            path.to_str().unwrap(),
            "--capacity",
            "64MiB",
            "--listen",
            &format!("{host}:0"),
        ],
        "datanode listening on ",
        &[],
        Some(log),
    )
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_datanode_stopped_cleanly_offers_its_blocks_again() {
    let (logs, journal, flash) = (
        Logs::new(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let image = flash.path().join("flash.img");
    let (mut nn, addr) = namenode("127.0.0.1:0", journal.path(), &logs.path("namenode-1"), &[]);
    let mut dn = flash_datanode(&addr, HOSTS[0], &image, &logs.path("datanode-1"));
    let store = Store::connect(&client(&addr, HOSTS[1])).await.unwrap();
    all_alive(&store, 1).await;
    write_files(&store, "/f", 6).await;
    // A clean stop, and the namenode killed and started again meanwhile.
    dn.signal("-TERM");
    assert!(dn.child.wait().unwrap().success());
    assert!(crail_store::datanode::flash_state_path(&image).exists());
    nn.signal("-KILL");
    nn.kill();
    let (mut nn, _) = namenode(&addr, journal.path(), &logs.path("namenode-2"), &[]);
    let mut dn = flash_datanode(&addr, HOSTS[0], &image, &logs.path("datanode-2"));
    all_alive(&store, 1).await;
    check_files(&store, "/f", 6, &logs).await;
    // A crash leaves no state: the next start is a new datanode, the old blocks are lost
    // (never offered as if they were whole).
    dn.signal("-KILL");
    dn.kill();
    assert!(!crail_store::datanode::flash_state_path(&image).exists());
    let _dn = flash_datanode(&addr, HOSTS[0], &image, &logs.path("datanode-3"));
    wait_until("the new datanode registered", || async {
        store
            .cluster_info()
            .await
            .is_ok_and(|info| info.datanodes.iter().filter(|d| d.alive).count() == 1)
    })
    .await;
    let err = read_file(&store, "/f/0").await.unwrap_err();
    assert!(
        matches!(err, crail_store::Error::LostBlocks { .. }),
        "{err}"
    );
    nn.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_tcp_peers_leave_the_unix_socket_to_the_nodes_engines() {
    let (logs, journal) = (Logs::new(), tempfile::tempdir().unwrap());
    let (_nn, addr) = namenode("127.0.0.1:0", journal.path(), &logs.path("namenode"), &[]);
    let _node = node(&addr, HOSTS[0], &logs.path("node"));
    let store = Store::connect(&client(&addr, HOSTS[0])).await.unwrap();
    all_alive(&store, 1).await;
    let shuffle = crail_node_service::advertised(&store, "/crail-shuffle", HOSTS[0])
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e {
            crail_node_service::Endpoint::Tcp(a) => Some(a),
            crail_node_service::Endpoint::Unix(_) => None,
        })
        .unwrap();
    let datanode: std::net::SocketAddr = store.cluster_info().await.unwrap().datanodes[0].address;
    // Two thousand peers connect to the node's TCP ports (the shuffle service's and the
    // datanode's) and say nothing.
    let connects = (0..2000).map(|i| {
        let to = if i % 2 == 0 { shuffle } else { datanode };
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(to))
    });
    let idle: Vec<_> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .filter_map(|c| c.ok().and_then(Result::ok))
        .collect();
    eprintln!("{} of 2000 idle peers connected", idle.len());
    assert!(idle.len() >= 1000, "the peers connected ({})", idle.len());
    // The node's own engine, on its Unix sockets, still connects and works.
    let engine = ShuffleClient::connect_local(store.clone(), "app")
        .await
        .unwrap();
    let id = ShuffleId::new("app", 0);
    engine
        .register(&id, &Meta::new(2, 3, "fixed:10:90"))
        .await
        .unwrap();
    for map in 0..2 {
        run_map(&engine, &id, map, 3).await;
    }
    assert!(read_all(&engine, &id, 3).await == expected(2, 3));
    write_files(&store, "/local", 2).await;
    check_files(&store, "/local", 2, &logs).await;
    drop(idle);
}
