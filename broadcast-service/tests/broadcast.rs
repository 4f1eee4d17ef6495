//! Broadcast variables through a real store: a namenode and three dram datanodes in this
//! process, each on its own 127.0.0.x address, and a client on each of those addresses.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use crail_broadcast::{Broadcasts, Error, NodeCache, VarId};
use crail_node::LocalCluster;
use crail_store::{ByteSize, Store};
use tokio::io::AsyncWriteExt;

const HOSTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
/// Each datanode's capacity.
const CAPACITY: u64 = 32 << 20;

struct Cluster {
    store: LocalCluster,
    /// Per host, the variables as a client on that host sees them.
    nodes: Vec<Broadcasts>,
}

async fn cluster() -> Cluster {
    let store = LocalCluster::start(&HOSTS, ByteSize(CAPACITY))
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for host in HOSTS {
        nodes.push(Broadcasts::new(
            Store::connect(&store.on(host)).await.unwrap(),
        ));
    }
    Cluster { store, nodes }
}

async fn used(b: &Broadcasts) -> u64 {
    let info = b.store().cluster_info().await.unwrap();
    info.datanodes.iter().map(|d| d.used).sum()
}

/// Waits (up to 5 s) until the store uses `baseline` blocks again.
async fn freed(b: &Broadcasts, baseline: u64, when: &str) {
    for _ in 0..100 {
        if used(b).await == baseline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("blocks not freed {when}");
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

const NOW: Duration = Duration::ZERO;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_every_size_read_byte_exact_on_every_node_and_striped_over_all() {
    let c = cluster().await;
    let block = c.nodes[0].store().block_size() as usize;
    let sizes = [0, 1, block - 1, block, 5 * block + 17];
    for (i, &len) in sizes.iter().enumerate() {
        let var = VarId::new("app-1", format!("broadcast_{i}"));
        let data = value(len, i as u8);
        // Put from the second node; read on all three.
        assert_eq!(c.nodes[1].put(&var, &data).await.unwrap(), len as u64);
        for node in &c.nodes {
            let got = node.read_all(&var, NOW).await.unwrap();
            assert!(got == data, "{var}: {} bytes back, {len} put", got.len());
        }
    }
    // The 6-block value's blocks lie on every host, not mostly on the writer's.
    let var = VarId::new("app-1", "broadcast_4");
    let value = c.nodes[0]
        .store()
        .get(&format!("/crail-broadcast/{}/{}", var.app, var.id))
        .await
        .unwrap();
    let blocks = value.block_locations(0, 6).await.unwrap();
    let hosts: Vec<String> = blocks.iter().map(|b| b.host.to_string()).collect();
    let distinct: BTreeSet<&String> = hosts.iter().collect();
    assert_eq!(distinct.len(), 3, "{hosts:?}");
    for host in HOSTS {
        assert_eq!(hosts.iter().filter(|h| *h == host).count(), 2, "{hosts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_unknown_existing_and_destroyed_variables_are_typed_errors() {
    let c = cluster().await;
    let b = &c.nodes[0];
    let baseline = used(b).await;
    let var = VarId::new("app-2", "v");
    assert!(matches!(
        b.get(&var, NOW).await,
        Err(Error::UnknownVariable { .. })
    ));
    for bad in [
        VarId::new("", "v"),
        VarId::new("a/b", "v"),
        VarId::new("a", ".v"),
    ] {
        let err = b.put(&bad, b"x").await.unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert!(matches!(b.get(&bad, NOW).await, Err(Error::Invalid { .. })));
    }
    b.put(&var, &value(3 << 20, 1)).await.unwrap();
    let err = c.nodes[1].put(&var, b"again").await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
    assert!(c.nodes[2].read_all(&var, NOW).await.unwrap() == value(3 << 20, 1));

    // A reader that opened the value before the destroy reads it whole; new gets do not
    // find it; the blocks come back when the reader is gone.
    let mut early = c.nodes[2].get(&var, NOW).await.unwrap();
    b.destroy(&var).await.unwrap();
    assert!(matches!(
        c.nodes[1].get(&var, NOW).await,
        Err(Error::UnknownVariable { .. })
    ));
    assert!(matches!(
        b.destroy(&var).await,
        Err(Error::UnknownVariable { .. })
    ));
    // Another put may reuse freed blocks; the early reader must still see its own bytes.
    let other = VarId::new("app-2", "w");
    b.put(&other, &value(3 << 20, 9)).await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = early.next_chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(got == value(3 << 20, 1));
    drop(early);
    b.destroy(&other).await.unwrap();
    freed(b, baseline, "after the reader left").await;

    // An application's end removes all of its variables.
    for i in 0..3 {
        b.put(&VarId::new("app-3", format!("v{i}")), b"abc")
            .await
            .unwrap();
    }
    b.remove_app("app-3").await.unwrap();
    b.remove_app("app-3").await.unwrap();
    assert!(matches!(
        b.get(&VarId::new("app-3", "v0"), NOW).await,
        Err(Error::UnknownVariable { .. })
    ));
    assert_eq!(used(b).await, baseline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_during_a_put_waits_for_the_whole_value_or_says_it_is_being_written() {
    let c = cluster().await;
    let var = VarId::new("app-4", "slow");
    let data = value(4 << 20, 4);
    let (mut tx, mut rx) = tokio::io::duplex(64 << 10);
    let writer = c.nodes[0].clone();
    let put_var = var.clone();
    let put = tokio::spawn(async move { writer.put_stream(&put_var, &mut rx).await });
    tx.write_all(&data[..1 << 20]).await.unwrap();
    // Half-written: a get that does not wait says so; one that waits gets the whole value.
    let mut said = false;
    for _ in 0..100 {
        match c.nodes[1].get(&var, NOW).await {
            Err(Error::BeingWritten { .. }) => {
                said = true;
                break;
            }
            // The put has not created its key yet.
            Err(Error::UnknownVariable { .. }) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => panic!("expected BeingWritten, got {other:?}"),
        }
    }
    assert!(said);
    let reader = c.nodes[2].clone();
    let get_var = var.clone();
    let waiting =
        tokio::spawn(async move { reader.read_all(&get_var, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.write_all(&data[1 << 20..]).await.unwrap();
    drop(tx);
    assert_eq!(put.await.unwrap().unwrap(), data.len() as u64);
    assert!(waiting.await.unwrap().unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_larger_than_the_free_store_fails_and_leaves_nothing() {
    let c = cluster().await;
    let b = &c.nodes[0];
    let baseline = used(b).await;
    let var = VarId::new("app-5", "huge");
    let err = b
        .put(&var, &value(3 * CAPACITY as usize + (1 << 20), 5))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StoreFull { .. }), "{err}");
    assert!(err.to_string().contains("app-5/huge"), "{err}");
    assert!(matches!(
        c.nodes[1].get(&var, NOW).await,
        Err(Error::UnknownVariable { .. })
    ));
    freed(b, baseline, "after a failed put").await;
    // The store is whole: a value that fits goes in and reads back.
    let fits = value(8 << 20, 6);
    b.put(&var, &fits).await.unwrap();
    assert!(c.nodes[2].read_all(&var, NOW).await.unwrap() == fits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_fetches_a_variable_once_however_many_of_its_readers_ask() {
    let c = cluster().await;
    let var = VarId::new("app-6", "shared");
    let data = value(6 << 20, 6);
    c.nodes[0].put(&var, &data).await.unwrap();
    let caches: Vec<NodeCache> = c.nodes.iter().cloned().map(NodeCache::new).collect();
    let mut readers = Vec::new();
    for cache in &caches {
        for _ in 0..4 {
            let (cache, var) = (cache.clone(), var.clone());
            readers.push(tokio::spawn(async move {
                let mut reader = cache.get(&var, NOW).await.unwrap();
                assert_eq!(reader.size(), 6 << 20);
                let mut got = Vec::new();
                while let Some(chunk) = reader.next_chunk().await.unwrap() {
                    got.extend_from_slice(&chunk);
                }
                got
            }));
        }
    }
    for reader in readers {
        assert!(reader.await.unwrap() == data);
    }
    for cache in &caches {
        assert_eq!(cache.fetches_of(&var), 1);
        let stats = cache.stats();
        assert_eq!(
            (stats.fetches, stats.hits, stats.cached),
            (1, 3, 1),
            "{stats:?}"
        );
        assert_eq!(stats.fetched_bytes, 6 << 20);
    }

    // Destroyed: no node serves its copy any more. Put again under the same name: a new
    // value, fetched anew.
    c.nodes[1].destroy(&var).await.unwrap();
    for cache in &caches {
        assert!(matches!(
            cache.get(&var, NOW).await,
            Err(Error::UnknownVariable { .. })
        ));
        assert_eq!(cache.stats().cached, 0);
    }
    let again = value(1 << 20, 7);
    c.nodes[2].put(&var, &again).await.unwrap();
    for cache in &caches {
        let mut reader = cache.get(&var, NOW).await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = reader.next_chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        assert!(got == again);
        assert_eq!(cache.fetches_of(&var), 2);
    }
    // An application's end drops its copies.
    caches[0].drop_app("app-6");
    assert_eq!(caches[0].stats().cached, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_lost_mid_read_fails_the_read_naming_the_variable() {
    let mut c = cluster().await;
    let var = VarId::new("app-7", "doomed");
    let data = value(12 << 20, 8);
    c.nodes[0].put(&var, &data).await.unwrap();
    let cache = NodeCache::new(c.nodes[1].clone());
    let mut direct = c.nodes[0].get(&var, NOW).await.unwrap();
    let first = direct.next_chunk().await.unwrap().unwrap();
    assert!(first[..] == data[..first.len()]);
    // A third of the stripes go with the datanode on 127.0.0.4.
    c.store.stop_node(HOSTS[2]).await.unwrap();
    let err = loop {
        match direct.next_chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("read a value whose stripes are gone"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("app-7/doomed"), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
    // A node's fetch fails the same way for its readers, and is not kept as a copy.
    let mut cached = cache.get(&var, NOW).await.unwrap();
    let err = loop {
        match cached.next_chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("read a value whose stripes are gone"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    assert_eq!(cache.stats().cached, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_twice_the_clusters_dram_continues_into_flash_and_reads_back() {
    let flash_dir = tempfile::tempdir().unwrap();
    let nodes: Vec<crail_node::NodeConfig> = HOSTS
        .iter()
        .map(|host| {
            crail_node::NodeConfig::new(host.parse().unwrap(), ByteSize(4 << 20))
                .storage_only()
                .with_flash(ByteSize(32 << 20), flash_dir.path())
        })
        .collect();
    let store = LocalCluster::start_with(&nodes, &crail_store::Config::default())
        .await
        .unwrap();
    let mut b = Vec::new();
    for host in HOSTS {
        b.push(Broadcasts::new(
            Store::connect(&store.on(host)).await.unwrap(),
        ));
    }
    let var = VarId::new("app-9", "beyond-dram");
    let data = value(24 << 20, 9);
    b[0].put(&var, &data).await.unwrap();
    let info = b[0].store().cluster_info().await.unwrap();
    let on = |tier: &str| -> u64 {
        info.datanodes
            .iter()
            .filter(|d| d.tier == tier)
            .map(|d| d.used)
            .sum()
    };
    assert_eq!(on("dram"), 12 << 20, "dram not full");
    assert!(on("flash") >= 12 << 20, "{} on flash", on("flash"));
    for node in &b {
        assert!(node.read_all(&var, NOW).await.unwrap() == data);
    }
}
