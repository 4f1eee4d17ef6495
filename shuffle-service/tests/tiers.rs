//! Shuffles larger than the cluster's DRAM: the group files continue into the nodes' flash
//! tier and read back byte-exact, with either tiering order; with `host-first` no block of a
//! group file leaves its node while the node has flash.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use crail_node::{LocalCluster, NodeConfig};
use crail_shuffle::{Meta, ShuffleId, Shuffles, Slots};
use crail_store::{ByteSize, Config, Store, Tiering};

const HOSTS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
const DRAM: u64 = 10 << 20;
const FLASH: u64 = 96 << 20;
const MAPS: u32 = 15;
const PARTITIONS: u32 = 4;
const RECORD: usize = 100;
/// Bytes per map and partition (a little over a block): 15 x 4 of them are 3x the
/// cluster's 20 MiB of DRAM.
const SEGMENT: usize = 10_486 * RECORD;

/// Map `map`'s bytes for `partition`: a stream no other segment repeats.
fn segment(map: u32, partition: u32) -> Vec<u8> {
    let mut x = (u64::from(map) << 32 | u64::from(partition)) ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(SEGMENT);
    while out.len() < SEGMENT {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(SEGMENT);
    out
}

async fn shuffle_three_times_dram(tiering: Tiering) {
    let flash_dir = tempfile::tempdir().unwrap();
    let nodes: Vec<NodeConfig> = HOSTS
        .iter()
        .map(|host| {
            NodeConfig::new(host.parse().unwrap(), ByteSize(DRAM))
                .storage_only()
                .with_flash(ByteSize(FLASH), flash_dir.path())
        })
        .collect();
    let mut config = Config::default();
    config.namenode.tiering = tiering;
    let local = LocalCluster::start_with(&nodes, &config).await.unwrap();
    let mut slots = Vec::new();
    for host in HOSTS {
        let store = Store::connect(&local.on(host)).await.unwrap();
        slots.push(Slots::new(store, host, 1));
    }
    let store = Store::connect(&local.client).await.unwrap();
    let shuffles = Shuffles::new(store.clone());
    let id = ShuffleId::new("tiers", 0);
    shuffles
        .register(&id, &Meta::new(MAPS, PARTITIONS, "fixed:10:90"))
        .await
        .unwrap();

    for map in 0..MAPS {
        // Every map on the first node: it outgrows its own DRAM.
        let mut writer = slots[0].lease(&id, map, 0).await.unwrap();
        for partition in 0..PARTITIONS {
            for piece in segment(map, partition).chunks(256 * RECORD) {
                writer.write(partition, piece).await.unwrap();
            }
        }
        writer.commit().await.unwrap();
    }

    // The writing node's DRAM is full and most bytes went to flash; class-first filled the
    // other node's DRAM first, host-first left it alone.
    let info = store.cluster_info().await.unwrap();
    let used = |tier: &str, host: &str| -> (u64, u64) {
        info.datanodes
            .iter()
            .filter(|d| d.tier == tier && d.host.to_string() == host)
            .fold((0, 0), |(u, c), d| (u + d.used, c + d.capacity))
    };
    let (mine, dram) = used("dram", HOSTS[0]);
    assert_eq!(mine, dram, "{tiering}: the writer's dram is not full");
    let (other, _) = used("dram", HOSTS[1]);
    let flash = used("flash", HOSTS[0]).0 + used("flash", HOSTS[1]).0;
    assert!(flash >= 3 * DRAM, "{tiering}: {flash} bytes on flash");
    match tiering {
        Tiering::ClassFirst => assert_eq!(other, dram, "class-first: other dram not full"),
        // (The shuffle's meta copies are placed on other hosts.)
        Tiering::HostFirst => assert!(other < dram / 2, "host-first: {other} in other dram"),
    }

    // Byte-exact, segment by segment.
    let mut reader = shuffles.read(&id, 0..PARTITIONS, None, 4).await.unwrap();
    let mut got: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        got.entry((chunk.map, chunk.partition))
            .or_default()
            .extend_from_slice(&chunk.data);
    }
    assert_eq!(got.len(), (MAPS * PARTITIONS) as usize);
    for ((map, partition), bytes) in &got {
        assert!(
            *bytes == segment(*map, *partition),
            "{tiering}: map {map} partition {partition} differs"
        );
    }

    // Host-first: every group file's blocks are on its own node (its flash holds them);
    // class-first: some went to the other node's DRAM.
    let mut remote = 0;
    for entry in store.list("/crail-shuffle/tiers/0/g").await.unwrap() {
        let owner: std::net::IpAddr = entry.name.split('-').next().unwrap().parse().unwrap();
        let blocks = store
            .block_locations(entry.stat.file_id, 0, entry.stat.block_count)
            .await
            .unwrap();
        remote += blocks.iter().filter(|b| b.host != owner).count();
    }
    match tiering {
        Tiering::HostFirst => assert_eq!(remote, 0, "host-first: blocks left their node"),
        Tiering::ClassFirst => assert!(remote > 0, "class-first: no block in remote dram"),
    }
    shuffles.unregister(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuffle_of_three_times_the_dram_continues_into_flash_class_first() {
    shuffle_three_times_dram(Tiering::ClassFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuffle_of_three_times_the_dram_continues_into_flash_host_first() {
    shuffle_three_times_dram(Tiering::HostFirst).await;
}
