//! The prost-generated messages (from `proto/crail/store/v1/*.proto`) and their conversions to
//! the public types. The generated types stay private: the wire format is not API.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::types;

include!(concat!(env!("OUT_DIR"), "/crail.store.v1.rs"));

impl From<types::NodeType> for NodeType {
    fn from(t: types::NodeType) -> Self {
        match t {
            types::NodeType::File => Self::File,
            types::NodeType::Directory => Self::Directory,
            types::NodeType::MultiFile => Self::Multifile,
            types::NodeType::Table => Self::Table,
            types::NodeType::KeyValue => Self::Keyvalue,
        }
    }
}

impl TryFrom<i32> for types::NodeType {
    type Error = Error;

    fn try_from(raw: i32) -> Result<Self> {
        match NodeType::try_from(raw) {
            Ok(NodeType::File) => Ok(Self::File),
            Ok(NodeType::Directory) => Ok(Self::Directory),
            Ok(NodeType::Multifile) => Ok(Self::MultiFile),
            Ok(NodeType::Table) => Ok(Self::Table),
            Ok(NodeType::Keyvalue) => Ok(Self::KeyValue),
            Ok(NodeType::Unspecified) | Err(_) => Err(Error::malformed(
                "node type",
                format!("unknown node type {raw}"),
            )),
        }
    }
}

impl From<&types::Placement> for Placement {
    fn from(p: &types::Placement) -> Self {
        Self {
            storage_class: p.storage_class,
            location: p.location.map(|l| l.to_string()),
            spread: p.spread,
            tiering: match p.tiering {
                None => Tiering::Default,
                Some(types::Tiering::ClassFirst) => Tiering::ClassFirst,
                Some(types::Tiering::HostFirst) => Tiering::HostFirst,
            } as i32,
        }
    }
}

impl TryFrom<Option<Placement>> for types::Placement {
    type Error = Error;

    fn try_from(p: Option<Placement>) -> Result<Self> {
        let p = p.unwrap_or_default();
        Ok(Self {
            storage_class: p.storage_class,
            location: p.location.as_deref().map(parse_ip).transpose()?,
            spread: p.spread,
            tiering: match Tiering::try_from(p.tiering) {
                Ok(Tiering::Default) => None,
                Ok(Tiering::ClassFirst) => Some(types::Tiering::ClassFirst),
                Ok(Tiering::HostFirst) => Some(types::Tiering::HostFirst),
                Err(_) => {
                    return Err(Error::malformed(
                        "placement tiering",
                        format!("unknown value {}", p.tiering),
                    ));
                }
            },
        })
    }
}

pub(crate) fn parse_ip(s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| {
        Error::malformed(
            "host address",
            format!("{:?} is not an IP address", crate::error::clipped(s, 64)),
        )
    })
}

pub(crate) fn parse_socket(s: &str) -> Result<SocketAddr> {
    s.parse().map_err(|_| {
        Error::malformed(
            "socket address",
            format!("{:?} is not ip:port", crate::error::clipped(s, 64)),
        )
    })
}

#[cfg(feature = "server")]
pub(crate) fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn time_from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl TryFrom<NodeInfo> for types::Stat {
    type Error = Error;

    fn try_from(n: NodeInfo) -> Result<Self> {
        Ok(Self {
            id: n.id,
            node_type: types::NodeType::try_from(n.r#type)?,
            size: n.size,
            block_count: n.block_count,
            file_id: n.file_id,
            placement: types::Placement::try_from(n.placement)?,
            enumerable: n.enumerable,
            created: time_from_millis(n.created_ms),
            modified: time_from_millis(n.modified_ms),
            children: n.children,
        })
    }
}

impl types::Grant {
    /// The wire form, for the block at storage offset `block`.
    pub(crate) fn to_wire(self, block: u64) -> Grant {
        Grant {
            block,
            generation: self.generation,
            write: self.write,
            mac: bytes::Bytes::copy_from_slice(&self.mac),
        }
    }

    /// From the wire; a signature of the wrong length becomes one the datanode refuses.
    pub(crate) fn from_wire(grant: &Grant) -> Self {
        let mut mac = [0u8; types::MAC_LEN];
        if grant.mac.len() == mac.len() {
            mac.copy_from_slice(&grant.mac);
        }
        Self {
            generation: grant.generation,
            write: grant.write,
            mac,
        }
    }
}

impl TryFrom<BlockLocation> for types::BlockLocation {
    type Error = Error;

    fn try_from(b: BlockLocation) -> Result<Self> {
        Ok(Self {
            index: b.index,
            datanode: types::DatanodeId(b.datanode),
            address: parse_socket(&b.address)?,
            host: parse_ip(&b.host)?,
            offset: b.offset,
            storage_class: b.storage_class,
            grant: types::Grant::from_wire(&b.grant.unwrap_or_default()),
        })
    }
}

impl DatanodeInfo {
    /// The public form; block counts become bytes of `block_size` blocks.
    pub(crate) fn into_status(self, block_size: u64) -> Result<types::DatanodeStatus> {
        Ok(types::DatanodeStatus {
            id: types::DatanodeId(self.id),
            host: parse_ip(&self.host)?,
            address: parse_socket(&self.address)?,
            tier: self.tier,
            storage_class: self.storage_class,
            capacity: self.capacity_blocks.saturating_mul(block_size),
            used: self.used_blocks.saturating_mul(block_size),
            alive: self.alive,
            last_heartbeat: Duration::from_millis(self.last_heartbeat_ms_ago),
        })
    }
}
