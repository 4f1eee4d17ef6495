//! A node assembled in this process: it announces what it serves, refuses what cannot work
//! with a typed error, and removes its flash file when it stops.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use crail_node::{Error, LocalCluster, Node, NodeConfig, ShuffleConfig};
use crail_store::{ByteSize, Config, Store};

fn host(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_tiers_and_services_and_refuses_what_cannot_work() {
    let cluster = LocalCluster::start(&["127.0.0.2"], ByteSize(16 << 20))
        .await
        .unwrap();
    let config = Config {
        client: cluster.client.clone(),
        ..Config::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let node = NodeConfig {
        flash: ByteSize(8 << 20),
        flash_dir: Some(dir.path().to_owned()),
        ..NodeConfig::new(host("127.0.0.3"), ByteSize(8 << 20))
    };
    let running = Node::start(&node, &config).await.unwrap();
    let lines = running.announcements();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines[0].starts_with("datanode listening on 127.0.0.3:"),
        "{lines:?}"
    );
    assert!(lines[1].contains("tier flash"), "{lines:?}");
    assert!(
        lines[2].starts_with("shuffle service on tcp:127.0.0.3:"),
        "{lines:?}"
    );
    assert!(
        lines[3].starts_with("broadcast service on tcp:127.0.0.3:"),
        "{lines:?}"
    );
    assert_eq!(lines[4], "node 127.0.0.3 serving: dram 8MiB, flash 8MiB");
    let store = Store::connect(&cluster.client).await.unwrap();
    let hosts = crail_shuffle::advertised_hosts(&store).await.unwrap();
    assert_eq!(hosts, ["127.0.0.3"]);

    // No storage; the flash file of a running node; a service port in use.
    let none = NodeConfig {
        dram: ByteSize(0),
        ..NodeConfig::new(host("127.0.0.4"), ByteSize(0))
    };
    let err = Node::start(&none, &config).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(err.to_string().contains("needs some storage"), "{err}");
    let twin = Node::start(&node, &config).await.unwrap_err();
    assert!(matches!(twin, Error::FlashInUse(_)), "{twin}");
    // The twin's dram tier, started before its flash failed, deregistered again.
    let info = store.cluster_info().await.unwrap();
    let alive = info.datanodes.iter().filter(|d| d.alive).count();
    assert_eq!(alive, 3, "{:?}", info.datanodes);
    let shuffle_port: u16 = lines[2]
        .split_once("tcp:127.0.0.3:")
        .unwrap()
        .1
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let clash = NodeConfig {
        shuffle: Some(ShuffleConfig {
            port: shuffle_port,
            ..ShuffleConfig::default()
        }),
        ..NodeConfig::new(host("127.0.0.3"), ByteSize(4 << 20))
    };
    let err = Node::start(&clash, &config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Listen { what, .. } if what == "shuffle service"),
        "{err}"
    );

    // Stopped, it leaves no file behind.
    running.stop().await.unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
