//! The test cluster: a namenode and whole nodes in the calling process, each node on its own
//! loopback address. What the tests of the crates above the store run on.

use std::net::{IpAddr, SocketAddr};

use crail_store::namenode::RunningNamenode;
use crail_store::{ByteSize, ClientConfig, Config, NamenodeConfig};

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::node::Node;

/// A namenode on 127.0.0.1 and one node per host, all in this process. Dropping it stops
/// them.
#[derive(Debug)]
pub struct LocalCluster {
    /// The namenode.
    pub namenode: RunningNamenode,
    /// A client configuration for it (no local host).
    pub client: ClientConfig,
    nodes: Vec<(IpAddr, Option<Node>)>,
}

impl LocalCluster {
    /// A dram-only datanode of `capacity` on each of `hosts`: the store alone.
    pub async fn start(hosts: &[&str], capacity: ByteSize) -> Result<Self> {
        let nodes = node_configs(hosts, capacity, NodeConfig::storage_only)?;
        Self::start_with(&nodes, &Config::default()).await
    }

    /// Whole nodes (`capacity` of dram, the shuffle and the broadcast service) on each of
    /// `hosts`.
    pub async fn with_services(hosts: &[&str], capacity: ByteSize) -> Result<Self> {
        let nodes = node_configs(hosts, capacity, |node| node)?;
        Self::start_with(&nodes, &Config::default()).await
    }

    /// `nodes` over `config` (its namenode on a free port of 127.0.0.1; its `[security]`
    /// secret guards every port).
    pub async fn start_with(nodes: &[NodeConfig], config: &Config) -> Result<Self> {
        let namenode = RunningNamenode::start(NamenodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..config.namenode.clone()
        })
        .await?;
        let client = ClientConfig {
            namenode: namenode.addr().to_string(),
            local_host: None,
            ..config.client.clone()
        };
        let config = Config {
            client: client.clone(),
            ..config.clone()
        };
        let mut started = Vec::new();
        for node in nodes {
            started.push((node.host, Some(Node::start(node, &config).await?)));
        }
        Ok(Self {
            namenode,
            client,
            nodes: started,
        })
    }

    /// Stops the node on `host` (its tiers deregister: their blocks are lost at once) and
    /// waits until it has.
    pub async fn stop_node(&mut self, host: &str) -> Result<()> {
        for (h, running) in &mut self.nodes {
            if h.to_string() == host
                && let Some(node) = running.take()
            {
                return node.stop().await;
            }
        }
        Ok(())
    }

    /// The client configuration of a client on `host` (one of the nodes' hosts, so its
    /// writes land there first and it uses the same-host path).
    pub fn on(&self, host: &str) -> ClientConfig {
        match host.parse() {
            Ok(ip) => self.client.clone().with_local_host(ip),
            Err(_) => self.client.clone(),
        }
    }
}

fn node_configs(
    hosts: &[&str],
    capacity: ByteSize,
    shape: impl Fn(NodeConfig) -> NodeConfig,
) -> Result<Vec<NodeConfig>> {
    hosts
        .iter()
        .map(|host| {
            let ip = host
                .parse()
                .map_err(|_| Error::Config(format!("{host}: not an IP address")))?;
            Ok(shape(NodeConfig::new(ip, capacity)))
        })
        .collect()
}
