//! Tiering, affinity, explicit placement, store full and datanode loss, with datanodes
//! registered on different 127.0.0.x hosts and clients connecting from them.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{BLOCK, Beating, client, client_on, datanode, heartbeats, ip, start, used_blocks};
use crail_store::{BlockLocation, CreateOptions, Error, Placement, Store};

fn hosts(blocks: &[BlockLocation]) -> Vec<String> {
    blocks
        .iter()
        .map(|b| format!("{}/{}", b.host, b.storage_class))
        .collect()
}

/// Three hosts, each with 2 DRAM blocks (class 0) and 10 flash blocks (class 1).
async fn three_hosts(store: &Store) -> Beating {
    let mut ids = Vec::new();
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        ids.push(datanode(store, host, 7000, 0, 2).await);
        ids.push(datanode(store, host, 7001, 1, 10).await);
    }
    Beating(heartbeats(store.clone(), ids))
}

#[tokio::test]
async fn class_zero_fills_cluster_wide_before_class_one_and_local_comes_first() {
    let nn = start().await;
    let admin = client(&nn).await;
    let _beat = three_hosts(&admin).await;
    let store = client_on(&nn, "127.0.0.3").await;
    let lease = store
        .create_file("/f", &CreateOptions::default())
        .await
        .unwrap();
    let blocks = lease.allocate(0, 8).await.unwrap();
    let placed = hosts(&blocks);
    // Local DRAM first, then the other hosts' DRAM, then flash (local first again).
    assert_eq!(&placed[..2], ["127.0.0.3/0", "127.0.0.3/0"]);
    let mut remote_dram = placed[2..6].to_vec();
    remote_dram.sort();
    assert_eq!(
        remote_dram,
        ["127.0.0.2/0", "127.0.0.2/0", "127.0.0.4/0", "127.0.0.4/0"]
    );
    assert_eq!(&placed[6..], ["127.0.0.3/1", "127.0.0.3/1"]);
    // Each block has a distinct address on its datanode.
    let mut addresses: Vec<_> = blocks.iter().map(|b| (b.datanode, b.offset)).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 8);
}

#[tokio::test]
async fn a_client_without_local_datanodes_gets_blocks_spread_round_robin() {
    let nn = start().await;
    let admin = client(&nn).await;
    let mut ids = Vec::new();
    for host in ["127.0.0.2", "127.0.0.3"] {
        ids.push(datanode(&admin, host, 7000, 0, 10).await);
    }
    let _beat = Beating(heartbeats(admin.clone(), ids));
    let store = client_on(&nn, "127.0.0.9").await;
    let lease = store
        .create_file("/f", &CreateOptions::default())
        .await
        .unwrap();
    let placed = hosts(&lease.allocate(0, 4).await.unwrap());
    assert_eq!(
        placed[0..2].iter().filter(|h| *h == "127.0.0.2/0").count(),
        1
    );
    assert_eq!(
        placed[2..4].iter().filter(|h| *h == "127.0.0.2/0").count(),
        1
    );
}

#[tokio::test]
async fn a_spread_file_stripes_across_every_host_even_from_one_that_has_datanodes() {
    let nn = start().await;
    let admin = client(&nn).await;
    let mut ids = Vec::new();
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        ids.push(datanode(&admin, host, 7000, 0, 10).await);
    }
    let _beat = Beating(heartbeats(admin.clone(), ids));
    let store = client_on(&nn, "127.0.0.3").await;
    let spread = CreateOptions::default().placement(Placement::default().spread());
    let lease = store.create_file("/striped", &spread).await.unwrap();
    let placed = hosts(&lease.allocate(0, 6).await.unwrap());
    // Each run of three consecutive blocks covers the three hosts.
    for run in placed.chunks(3) {
        let mut run = run.to_vec();
        run.sort();
        assert_eq!(
            run,
            ["127.0.0.2/0", "127.0.0.3/0", "127.0.0.4/0"],
            "{placed:?}"
        );
    }
    // The file remembers how it was placed: blocks it allocates later stripe too.
    let stat = store.stat("/striped").await.unwrap();
    assert!(stat.placement.spread);
    let more = hosts(&lease.allocate(6, 3).await.unwrap());
    let mut more = more.clone();
    more.sort();
    assert_eq!(more, ["127.0.0.2/0", "127.0.0.3/0", "127.0.0.4/0"]);
}

#[tokio::test]
async fn explicit_class_and_location_are_honoured() {
    let nn = start().await;
    let admin = client(&nn).await;
    let _beat = three_hosts(&admin).await;
    let store = client_on(&nn, "127.0.0.2").await;

    let flash = CreateOptions::default().placement(Placement::default().storage_class(1));
    let lease = store.create_file("/flash", &flash).await.unwrap();
    let placed = hosts(&lease.allocate(0, 3).await.unwrap());
    assert_eq!(placed, ["127.0.0.2/1"; 3]);
    assert_eq!(
        store.stat("/flash").await.unwrap().placement,
        Placement::default().storage_class(1)
    );

    let there = CreateOptions::default().placement(Placement::default().location(ip("127.0.0.4")));
    let lease = store.create_file("/there", &there).await.unwrap();
    let placed = hosts(&lease.allocate(0, 4).await.unwrap());
    assert_eq!(
        placed,
        ["127.0.0.4/0", "127.0.0.4/0", "127.0.0.4/1", "127.0.0.4/1"]
    );

    // Both, until that one datanode is full: then store full, though others have room.
    let both = CreateOptions::default().placement(
        Placement::default()
            .storage_class(1)
            .location(ip("127.0.0.3")),
    );
    let lease = store.create_file("/both", &both).await.unwrap();
    assert_eq!(
        hosts(&lease.allocate(0, 10).await.unwrap()),
        ["127.0.0.3/1"; 10]
    );
    let err = lease.allocate(10, 1).await.unwrap_err();
    assert!(
        matches!(err, Error::StoreFull { blocks: 1, storage_class: Some(1), location: Some(l) } if l == ip("127.0.0.3")),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "store full: no room for 1 block(s) in storage class 1 on host 127.0.0.3"
    );
}

#[tokio::test]
async fn store_full_allocates_nothing() {
    let nn = start().await;
    let store = client(&nn).await;
    let a = datanode(&store, "127.0.0.2", 7000, 0, 2).await;
    let b = datanode(&store, "127.0.0.3", 7000, 1, 2).await;
    let _beat = Beating(heartbeats(store.clone(), vec![a, b]));

    let lease = store
        .create_file("/f", &CreateOptions::default())
        .await
        .unwrap();
    let err = lease.allocate(0, 5).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::StoreFull {
                blocks: 5,
                storage_class: None,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(used_blocks(&store).await, 0);
    assert_eq!(store.stat("/f").await.unwrap().block_count, 0);

    lease.allocate(0, 4).await.unwrap();
    assert_eq!(used_blocks(&store).await, 4);
    let other = store
        .create_file("/g", &CreateOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        other.allocate(0, 1).await,
        Err(Error::StoreFull { .. })
    ));
    // Freed blocks are reused.
    lease.close(BLOCK).await.unwrap();
    assert_eq!(used_blocks(&store).await, 1);
    assert_eq!(other.allocate(0, 3).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_datanode_that_misses_heartbeats_gets_no_blocks_and_its_blocks_are_lost() {
    let nn = start().await;
    let store = client_on(&nn, "127.0.0.9").await;
    let alive = datanode(&store, "127.0.0.2", 7000, 0, 100).await;
    let doomed = datanode(&store, "127.0.0.3", 7000, 0, 100).await;
    let _keep = Beating(heartbeats(store.clone(), vec![alive.clone()]));
    let doomed_beat = Beating(heartbeats(store.clone(), vec![doomed.clone()]));

    let lease = store
        .create_file("/f", &CreateOptions::default())
        .await
        .unwrap();
    let blocks = lease.allocate(0, 6).await.unwrap();
    lease.close(6 * BLOCK).await.unwrap();
    let on_doomed: Vec<u64> = blocks
        .iter()
        .filter(|b| b.datanode == doomed.id)
        .map(|b| b.index)
        .collect();
    assert_eq!(on_doomed.len(), 3);

    drop(doomed_beat);
    // 5 missed heartbeats of 100 ms, plus the reaper's tick, plus slack.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let info = store.cluster_info().await.unwrap();
    let status = info.datanodes.iter().find(|d| d.id == doomed.id).unwrap();
    assert!(!status.alive);
    assert!(status.last_heartbeat >= Duration::from_millis(500));

    let file = store.lookup("/f").await.unwrap().into_file().unwrap();
    let err = file.all_block_locations().await.unwrap_err();
    match &err {
        Error::LostBlocks {
            path,
            blocks,
            datanodes,
        } => {
            assert_eq!(path, "/f");
            assert_eq!(blocks, &on_doomed);
            assert_eq!(datanodes, &[doomed.id.0]);
        }
        other => panic!("expected lost blocks, got {other}"),
    }
    assert!(err.to_string().starts_with("/f: blocks ["), "{err}");
    // Blocks on the live datanode are still readable on their own.
    let live_index = blocks
        .iter()
        .find(|b| b.datanode == alive.id)
        .unwrap()
        .index;
    file.block_locations(live_index, 1).await.unwrap();

    let lease = store
        .create_file("/g", &CreateOptions::default())
        .await
        .unwrap();
    let fresh = lease.allocate(0, 10).await.unwrap();
    assert!(fresh.iter().all(|b| b.datanode == alive.id));

    let err = store.heartbeat(&doomed).await.unwrap_err();
    assert!(matches!(err, Error::UnknownDatanode { .. }), "{err}");
    let again = datanode(&store, "127.0.0.3", 7000, 0, 100).await;
    assert_ne!(again.id, doomed.id);
}

#[tokio::test]
async fn deregistered_datanodes_leave_at_once() {
    let nn = start().await;
    let store = client(&nn).await;
    let a = datanode(&store, "127.0.0.2", 7000, 0, 4).await;
    let _beat = Beating(heartbeats(store.clone(), vec![a.clone()]));
    let lease = store
        .create_file("/f", &CreateOptions::default())
        .await
        .unwrap();
    lease.allocate(0, 1).await.unwrap();
    store.deregister_datanode(&a).await.unwrap();
    let err = lease.allocate(1, 1).await.unwrap_err();
    assert!(matches!(err, Error::StoreFull { .. }), "{err}");
    let err = store.deregister_datanode(&a).await.unwrap_err();
    assert!(matches!(err, Error::UnknownDatanode { .. }), "{err}");
}

#[tokio::test]
async fn registrations_smaller_than_a_block_are_refused() {
    let nn = start().await;
    let store = client_on(&nn, "127.0.0.2").await;
    let err = store
        .register_datanode(&crail_store::DatanodeSpec {
            host: ip("127.0.0.2"),
            address: "127.0.0.2:7000".parse().unwrap(),
            tier: "dram".into(),
            storage_class: 0,
            capacity: BLOCK - 1,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidDatanode { .. }), "{err}");
}
