//! Helpers shared by the integration tests: a real namenode on 127.0.0.1:0 with short timers,
//! and clients bound to chosen 127.0.0.x hosts.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crail_store::namenode::RunningNamenode;
use crail_store::{ClientConfig, DatanodeSpec, NamenodeConfig, Registration, Store};

pub const BLOCK: u64 = 1 << 20;

/// Namenode settings that make leases (1 s) and heartbeats (dead after 500 ms) expire within
/// a test's patience, with room for a loaded CI machine.
pub fn fast_config() -> NamenodeConfig {
    NamenodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        lease_timeout: Duration::from_millis(1000),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_misses: 5,
        ..NamenodeConfig::default()
    }
}

pub async fn start() -> RunningNamenode {
    start_with(fast_config()).await
}

pub async fn start_with(config: NamenodeConfig) -> RunningNamenode {
    RunningNamenode::start(config).await.unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn client_config(nn: &RunningNamenode) -> ClientConfig {
    ClientConfig {
        rpc_timeout: Duration::from_secs(10),
        ..ClientConfig::for_namenode(nn.addr())
    }
}

/// A client connecting from `host` (its placement affinity).
pub async fn client_on(nn: &RunningNamenode, host: &str) -> Store {
    Store::connect(&client_config(nn).with_local_host(ip(host)))
        .await
        .unwrap()
}

pub async fn client(nn: &RunningNamenode) -> Store {
    client_on(nn, "127.0.0.1").await
}

/// Registers a datanode tier of `blocks` blocks on `host` (port distinguishes tiers), from a
/// connection on that host (a datanode registers its own address).
pub async fn datanode(
    store: &Store,
    host: &str,
    port: u16,
    class: u32,
    blocks: u64,
) -> Registration {
    let config = store.config().clone().with_local_host(ip(host));
    Store::connect(&config)
        .await
        .unwrap()
        .register_datanode(&DatanodeSpec {
            host: ip(host),
            address: SocketAddr::new(ip(host), port),
            tier: if class == 0 { "dram" } else { "flash" }.into(),
            storage_class: class,
            capacity: blocks * BLOCK,
        })
        .await
        .unwrap()
}

/// Keeps datanodes alive in the background until the returned handle is dropped.
pub fn heartbeats(store: Store, datanodes: Vec<Registration>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for datanode in &datanodes {
                let _ = store.heartbeat(datanode).await;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}

/// Aborts the heartbeat task on drop.
pub struct Beating(pub tokio::task::JoinHandle<()>);

impl Drop for Beating {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn used_blocks(store: &Store) -> u64 {
    let info = store.cluster_info().await.unwrap();
    info.datanodes
        .iter()
        .map(|d| d.used / info.block_size)
        .sum()
}
