//! The namespace and its journal: the records each change writes, the replay that rebuilds a
//! namespace from them after a restart, and the records a snapshot holds.
//!
//! Only what outlives a restart is recorded: nodes as they are created, moved and deleted,
//! and data as it is committed (a close, or a size commit). Leases, holds and values still
//! being written are not: after a restart every lease has expired, so a file comes back with
//! its committed size and blocks, exactly as if its writer had given up. Blocks allocated but
//! never committed are not recorded either; they are free after a restart.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use super::{FileData, FileId, FileState, Namespace, Node, NodeId, NodeKind, ROOT};
use crate::namenode::journal::{Compact, Journal};
use crate::namenode::registry::{BlockAddr, Registered};
use crate::proto::{self as pb, journal_record::Op, millis_since_epoch, time_from_millis};
use crate::types::{DatanodeSpec, NodeType, Placement};

const ADDR_BYTES: usize = 24;

fn pack(blocks: &[BlockAddr]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(blocks.len() * ADDR_BYTES);
    for b in blocks {
        out.extend_from_slice(&b.datanode.to_le_bytes());
        out.extend_from_slice(&b.block.to_le_bytes());
        out.extend_from_slice(&b.generation.to_le_bytes());
    }
    out.into()
}

fn unpack(bytes: &[u8]) -> impl Iterator<Item = BlockAddr> + '_ {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    bytes.chunks_exact(ADDR_BYTES).map(move |c| BlockAddr {
        datanode: word(&c[0..8]),
        block: word(&c[8..16]),
        generation: word(&c[16..24]),
    })
}

impl Namespace {
    /// From now on, every lasting change is appended to `journal`.
    pub(crate) fn record_into(&mut self, journal: Arc<Journal>) {
        self.journal = Some(journal);
    }

    fn record(&self, op: Op) {
        if let Some(journal) = &self.journal {
            journal.append(&pb::JournalRecord { op: Some(op) });
        }
    }

    /// Whether changes are being recorded.
    pub(super) fn recording(&self) -> bool {
        self.journal.is_some()
    }

    pub(super) fn record_created(&self, id: NodeId) {
        if !self.recording() {
            return;
        }
        if let Some(created) = self.created_record(id) {
            self.record(Op::Created(created));
        }
    }

    fn created_record(&self, id: NodeId) -> Option<pb::NodeCreated> {
        let node = self.nodes.get(&id)?;
        Some(pb::NodeCreated {
            id,
            parent: node.parent,
            name: node.name.to_string(),
            r#type: pb::NodeType::from(node.node_type()) as i32,
            enumerable: node.enumerable,
            placement: Some(pb::Placement::from(&node.placement)),
            created_ms: millis_since_epoch(node.created),
            modified_ms: millis_since_epoch(node.modified),
            file: match node.kind {
                NodeKind::File(file) => file,
                _ => 0,
            },
        })
    }

    /// Records what `file` holds now that its size is committed: its size and its first
    /// `ceil(size / block)` blocks (those past the last record only).
    pub(super) fn record_committed(&mut self, file: FileId) {
        if !self.recording() {
            return;
        }
        let block_size = self.registry.block_size();
        let Some(f) = self.files.get_mut(&file) else {
            return;
        };
        let count = f.size.div_ceil(block_size).min(f.blocks.len() as u64);
        let first = f.journaled.min(count);
        let addrs = pack(&f.blocks[first as usize..count as usize]);
        f.journaled = count;
        let (node, size, placement) = (f.node, f.size, pb::Placement::from(&f.placement));
        let modified = self
            .nodes
            .get(&node)
            .map_or(0, |n| millis_since_epoch(n.modified));
        self.record(Op::Committed(pb::FileCommitted {
            file,
            node,
            size,
            blocks: count,
            first,
            addrs,
            placement: Some(placement),
            modified_ms: modified,
        }));
    }

    pub(super) fn record_deleted(&self, id: NodeId, at: SystemTime) {
        self.record(Op::Deleted(pb::NodeDeleted {
            id,
            modified_ms: millis_since_epoch(at),
        }));
    }

    pub(super) fn record_moved(&self, id: NodeId, parent: NodeId, name: &str, at: SystemTime) {
        self.record(Op::Moved(pb::NodeMoved {
            id,
            parent,
            name: name.into(),
            modified_ms: millis_since_epoch(at),
        }));
    }

    pub(super) fn record_datanode(&self, id: u64, uuid: &[u8], spec: &DatanodeSpec) {
        self.record(Op::Datanode(datanode_record(id, uuid, spec)));
    }

    /// Applies one record of a journal being replayed (never one this namespace wrote).
    pub(crate) fn apply(&mut self, record: pb::JournalRecord) {
        match record.op {
            None | Some(Op::Header(_)) => {}
            Some(Op::Counters(c)) => {
                self.next_node = self.next_node.max(c.next_node);
                self.next_file = self.next_file.max(c.next_file);
            }
            Some(Op::Created(c)) => self.apply_created(c),
            Some(Op::Committed(c)) => self.apply_committed(c),
            Some(Op::Deleted(d)) => self.apply_deleted(d),
            Some(Op::Moved(m)) => self.apply_moved(m),
            Some(Op::Datanode(d)) => {
                let (Ok(host), Ok(address)) =
                    (d.host.parse::<IpAddr>(), d.address.parse::<SocketAddr>())
                else {
                    return;
                };
                let spec = DatanodeSpec {
                    host,
                    address,
                    tier: d.tier,
                    storage_class: d.storage_class,
                    capacity: d.capacity_bytes,
                };
                self.registry.restore(d.id, &d.uuid, &spec);
            }
        }
    }

    fn touch(&mut self, id: NodeId, ms: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.modified = node.modified.max(time_from_millis(ms));
        }
    }

    fn apply_created(&mut self, c: pb::NodeCreated) {
        let Ok(ty) = NodeType::try_from(c.r#type) else {
            return;
        };
        let placement = Placement::try_from(c.placement).unwrap_or_default();
        let kind = NodeKind::empty(ty, c.file);
        let name: Box<str> = c.name.into();
        match self.nodes.get_mut(&c.parent).map(|p| &mut p.kind) {
            Some(NodeKind::Container { children, .. }) => {
                children.insert(name.clone(), c.id);
            }
            _ => {
                tracing::warn!(
                    node = c.id,
                    parent = c.parent,
                    "journal: a node whose parent is unknown; skipped"
                );
                return;
            }
        }
        if ty == NodeType::File {
            self.files.insert(
                c.file,
                FileData::new(c.id, placement.clone(), FileState::Live, None),
            );
            self.next_file = self.next_file.max(c.file + 1);
        }
        self.nodes.insert(
            c.id,
            Node {
                parent: c.parent,
                name,
                kind,
                enumerable: c.enumerable,
                placement,
                created: time_from_millis(c.created_ms),
                modified: time_from_millis(c.modified_ms),
            },
        );
        self.next_node = self.next_node.max(c.id + 1);
        self.touch(c.parent, c.created_ms);
    }

    fn apply_committed(&mut self, c: pb::FileCommitted) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.files.entry(c.file) {
            let placement = Placement::try_from(c.placement).unwrap_or_default();
            slot.insert(FileData::new(c.node, placement, FileState::Live, None));
            self.next_file = self.next_file.max(c.file + 1);
        }
        let replaced = match self.nodes.get_mut(&c.node).map(|n| &mut n.kind) {
            Some(NodeKind::KeyValue { current, .. }) if *current != Some(c.file) => {
                current.replace(c.file)
            }
            Some(NodeKind::File(file)) if *file != c.file => Some(std::mem::replace(file, c.file)),
            Some(_) => None,
            None => {
                self.files.remove(&c.file);
                return;
            }
        };
        if let Some(old) = replaced {
            self.files.remove(&old);
        }
        if let Some(f) = self.files.get_mut(&c.file) {
            f.blocks
                .truncate(usize::try_from(c.first).unwrap_or(usize::MAX));
            f.blocks.extend(unpack(&c.addrs));
            f.blocks
                .truncate(usize::try_from(c.blocks).unwrap_or(usize::MAX));
            f.size = c.size;
            f.journaled = f.blocks.len() as u64;
            let top = f.blocks.iter().map(|b| b.generation).max().unwrap_or(0);
            self.registry.saw_generation(top);
        }
        if let Some(node) = self.nodes.get_mut(&c.node) {
            node.modified = time_from_millis(c.modified_ms);
        }
    }

    fn apply_deleted(&mut self, d: pb::NodeDeleted) {
        let Some(node) = self.nodes.get(&d.id) else {
            return;
        };
        let (parent, name) = (node.parent, node.name.clone());
        if let Some(NodeKind::Container { children, .. }) =
            self.nodes.get_mut(&parent).map(|p| &mut p.kind)
        {
            children.remove(&name);
        }
        self.touch(parent, d.modified_ms);
        let mut stack = vec![d.id];
        while let Some(id) = stack.pop() {
            let Some(node) = self.nodes.remove(&id) else {
                continue;
            };
            match node.kind {
                NodeKind::Container { children, .. } => stack.extend(children.into_values()),
                NodeKind::File(file) => {
                    self.files.remove(&file);
                }
                NodeKind::KeyValue { current, pending } => {
                    for file in current.into_iter().chain(pending) {
                        self.files.remove(&file);
                    }
                }
            }
        }
    }

    fn apply_moved(&mut self, m: pb::NodeMoved) {
        let Some(node) = self.nodes.get(&m.id) else {
            return;
        };
        let (old_parent, old_name) = (node.parent, node.name.clone());
        if !matches!(
            self.nodes.get(&m.parent).map(|p| &p.kind),
            Some(NodeKind::Container { .. })
        ) {
            return;
        }
        if let Some(NodeKind::Container { children, .. }) =
            self.nodes.get_mut(&old_parent).map(|p| &mut p.kind)
        {
            children.remove(&old_name);
        }
        let name: Box<str> = m.name.into();
        if let Some(NodeKind::Container { children, .. }) =
            self.nodes.get_mut(&m.parent).map(|p| &mut p.kind)
        {
            children.insert(name.clone(), m.id);
        }
        if let Some(node) = self.nodes.get_mut(&m.id) {
            node.parent = m.parent;
            node.name = name;
        }
        self.touch(old_parent, m.modified_ms);
        self.touch(m.parent, m.modified_ms);
    }

    /// After a replay: the applications' usage counted afresh, and each file charged to its
    /// application.
    pub(crate) fn finish_replay(&mut self) {
        let block = self.registry.block_size();
        let apps: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| self.app_of(*id) == Some(*id))
            .collect();
        for app in apps {
            self.new_app(app);
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let Some(app) = self.app_of(id).filter(|app| *app != id) else {
                continue;
            };
            self.count_in(app, 1, 0);
        }
        let files: Vec<(FileId, NodeId, u64)> = self
            .files
            .iter()
            .map(|(id, f)| (*id, f.node, f.blocks.len() as u64 * block))
            .collect();
        for (file, node, bytes) in files {
            let app = self.app_of(node);
            if let Some(f) = self.files.get_mut(&file) {
                f.app = app;
            }
            if let Some(app) = app {
                self.count_in(app, 0, bytes);
            }
        }
    }

    /// Registers a datanode tier (see [`crate::namenode::registry::Registry::register`]) and
    /// records it.
    pub(crate) fn register_datanode(
        &mut self,
        spec: &DatanodeSpec,
        uuid: &[u8],
        report: &[(u64, u64)],
        now: std::time::Instant,
    ) -> crate::error::Result<Registered> {
        let held = self
            .registry
            .id_of(uuid)
            .map(|id| self.blocks_on(id))
            .unwrap_or_default();
        let registered = self
            .registry
            .register(spec, uuid, report, move |_| held, now)?;
        self.record_datanode(registered.id, uuid, spec);
        Ok(registered)
    }

    /// The blocks of datanode `id` that files hold: block number and generation.
    fn blocks_on(&self, id: u64) -> Vec<(u64, u64)> {
        self.files
            .values()
            .flat_map(|f| f.blocks.iter())
            .filter(|b| b.datanode == id)
            .map(|b| (b.block, b.generation))
            .collect()
    }
}

fn datanode_record(id: u64, uuid: &[u8], spec: &DatanodeSpec) -> pb::DatanodeKnown {
    pb::DatanodeKnown {
        id,
        uuid: bytes::Bytes::copy_from_slice(uuid),
        host: spec.host.to_string(),
        address: spec.address.to_string(),
        tier: spec.tier.clone(),
        storage_class: spec.storage_class,
        capacity_bytes: spec.capacity,
    }
}

impl Compact for Namespace {
    fn apply(&mut self, record: pb::JournalRecord) {
        Namespace::apply(self, record);
    }

    /// The records that rebuild this namespace: counters, datanodes, every node parent first,
    /// then every committed value.
    fn dump(&self, out: &mut dyn FnMut(pb::JournalRecord)) {
        let emit = |op: Op, out: &mut dyn FnMut(pb::JournalRecord)| {
            out(pb::JournalRecord { op: Some(op) });
        };
        emit(
            Op::Counters(pb::Counters {
                next_node: self.next_node,
                next_file: self.next_file,
            }),
            out,
        );
        for (id, uuid, spec) in self.registry.known() {
            emit(Op::Datanode(datanode_record(id, &uuid, &spec)), out);
        }
        let mut stack = vec![ROOT];
        let mut values = Vec::new();
        while let Some(id) = stack.pop() {
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            if id != ROOT
                && let Some(created) = self.created_record(id)
            {
                emit(Op::Created(created), out);
            }
            match &node.kind {
                NodeKind::Container { children, .. } => stack.extend(children.values().rev()),
                // An empty file is whole with its node's record.
                NodeKind::File(file) => {
                    if self
                        .files
                        .get(file)
                        .is_some_and(|f| f.size > 0 || !f.blocks.is_empty())
                    {
                        values.push(*file);
                    }
                }
                NodeKind::KeyValue { current, .. } => values.extend(*current),
            }
        }
        for file in values {
            let Some(f) = self.files.get(&file) else {
                continue;
            };
            emit(
                Op::Committed(pb::FileCommitted {
                    file,
                    node: f.node,
                    size: f.size,
                    blocks: f.blocks.len() as u64,
                    first: 0,
                    addrs: pack(&f.blocks),
                    placement: Some(pb::Placement::from(&f.placement)),
                    modified_ms: self
                        .nodes
                        .get(&f.node)
                        .map_or(0, |n| millis_since_epoch(n.modified)),
                }),
                out,
            );
        }
    }
}
