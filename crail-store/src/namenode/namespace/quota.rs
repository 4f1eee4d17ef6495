//! Per-application quotas. The children of the configured application roots
//! (`/crail-shuffle/<app>`, `/crail-broadcast/<app>`) are applications' directories; each may
//! hold at most `app_max_nodes` namespace nodes and `app_max_bytes` bytes of blocks, so one
//! application (or one client with the secret) cannot fill the namenode's memory or the store
//! for all. Usage is counted as nodes and blocks come and go: a node charges the application
//! its directory lies in; a file remembers its application, so blocks freed later (a value a
//! reader still held) are given back to it. Besides, the whole namespace holds at most
//! `max_nodes` nodes, however many applications share it.

use std::collections::HashMap;

use super::{Namespace, NodeId, NodeKind, ROOT};
use crate::config::NamenodeConfig;
use crate::error::{Error, Result};

/// The limits, and what each application's directory holds.
#[derive(Debug)]
pub(super) struct Quotas {
    roots: Vec<Box<str>>,
    /// Nodes the whole namespace may hold.
    max_total: u64,
    max_nodes: u64,
    max_bytes: u64,
    usage: HashMap<NodeId, Usage>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    /// Nodes below the application's directory (not the directory itself).
    nodes: u64,
    bytes: u64,
}

impl Quotas {
    pub(super) fn new(config: &NamenodeConfig) -> Self {
        Self {
            roots: config
                .app_roots
                .iter()
                .map(|r| r.trim_start_matches('/').into())
                .collect(),
            max_total: config.max_nodes,
            max_nodes: config.app_max_nodes,
            max_bytes: config.app_max_bytes.bytes(),
            usage: HashMap::new(),
        }
    }
}

impl Namespace {
    /// Whether `id` is an application root (`/crail-shuffle`).
    fn is_app_root(&self, id: NodeId) -> bool {
        id != ROOT
            && self.nodes.get(&id).is_some_and(|n| {
                n.parent == ROOT && self.quotas.roots.iter().any(|r| **r == *n.name)
            })
    }

    /// The application's directory `id` lies in (itself if it is one).
    pub(super) fn app_of(&self, mut id: NodeId) -> Option<NodeId> {
        loop {
            let parent = self.nodes.get(&id)?.parent;
            if id == ROOT || parent == ROOT {
                return None;
            }
            if self.is_app_root(parent) {
                return Some(id);
            }
            id = parent;
        }
    }

    fn quota_error(&self, app: NodeId, what: &str, limit: u64, used: u64) -> Error {
        Error::QuotaExceeded {
            app: self.path_of(app),
            what: what.into(),
            limit,
            used,
        }
    }

    /// Charges a node about to be created under `parent`: refused past the namenode's limit
    /// or the application's quota. Returns whether the node will be an application's
    /// directory itself.
    pub(super) fn charge_node(&mut self, parent: NodeId) -> Result<bool> {
        let (nodes, max) = (self.nodes.len() as u64, self.quotas.max_total);
        if nodes >= max {
            return Err(Error::QuotaExceeded {
                app: "/".into(),
                what: "namespace nodes (namenode.max_nodes)".into(),
                limit: max,
                used: nodes,
            });
        }
        if self.is_app_root(parent) {
            return Ok(true);
        }
        let Some(app) = self.app_of(parent) else {
            return Ok(false);
        };
        let max = self.quotas.max_nodes;
        let usage = self.quotas.usage.entry(app).or_default();
        if max > 0 && usage.nodes >= max {
            let used = usage.nodes;
            return Err(self.quota_error(app, "namespace nodes", max, used));
        }
        usage.nodes += 1;
        Ok(false)
    }

    /// A node was created as an application's directory.
    pub(super) fn new_app(&mut self, id: NodeId) {
        self.quotas.usage.insert(id, Usage::default());
    }

    /// Adds `nodes` and `bytes` to what `app` holds, whatever its quota (a replay).
    pub(super) fn count_in(&mut self, app: NodeId, nodes: u64, bytes: u64) {
        let usage = self.quotas.usage.entry(app).or_default();
        usage.nodes += nodes;
        usage.bytes += bytes;
    }

    /// A node of application `app` is gone (`app` itself: its usage goes with it).
    pub(super) fn uncharge_node(&mut self, id: NodeId, app: Option<NodeId>) {
        if self.quotas.usage.remove(&id).is_some() {
            return;
        }
        if let Some(usage) = app.and_then(|a| self.quotas.usage.get_mut(&a)) {
            usage.nodes = usage.nodes.saturating_sub(1);
        }
    }

    /// Charges `bytes` of new blocks to `app`: refused past the quota.
    pub(super) fn charge_bytes(&mut self, app: Option<NodeId>, bytes: u64) -> Result<()> {
        let Some(app) = app else {
            return Ok(());
        };
        let max = self.quotas.max_bytes;
        let usage = self.quotas.usage.entry(app).or_default();
        if max > 0 && usage.bytes.saturating_add(bytes) > max {
            let used = usage.bytes;
            return Err(self.quota_error(app, "bytes", max, used));
        }
        usage.bytes += bytes;
        Ok(())
    }

    /// Gives `bytes` of freed blocks back to `app`.
    pub(super) fn uncharge_bytes(&mut self, app: Option<NodeId>, bytes: u64) {
        if let Some(usage) = app.and_then(|a| self.quotas.usage.get_mut(&a)) {
            usage.bytes = usage.bytes.saturating_sub(bytes);
        }
    }

    /// Moves the subtree `id` (not an application's directory) from application `from` into
    /// `to`: its nodes and bytes are charged to `to` (refused past its quota) and given back
    /// to `from`; its files remember `to`.
    pub(super) fn move_charges(
        &mut self,
        id: NodeId,
        from: Option<NodeId>,
        to: Option<NodeId>,
    ) -> Result<()> {
        if from == to {
            return Ok(());
        }
        let (nodes, files) = self.subtree(id);
        let block = self.registry.block_size();
        let bytes: u64 = files
            .iter()
            .filter_map(|f| self.files.get(f))
            .map(|f| f.blocks.len() as u64 * block)
            .sum();
        if let Some(app) = to {
            let usage = self.quotas.usage.get(&app).copied().unwrap_or_default();
            let (max_nodes, max_bytes) = (self.quotas.max_nodes, self.quotas.max_bytes);
            if max_nodes > 0 && usage.nodes + nodes > max_nodes {
                return Err(self.quota_error(app, "namespace nodes", max_nodes, usage.nodes));
            }
            if max_bytes > 0 && usage.bytes + bytes > max_bytes {
                return Err(self.quota_error(app, "bytes", max_bytes, usage.bytes));
            }
            let usage = self.quotas.usage.entry(app).or_default();
            usage.nodes += nodes;
            usage.bytes += bytes;
        }
        if let Some(usage) = from.and_then(|a| self.quotas.usage.get_mut(&a)) {
            usage.nodes = usage.nodes.saturating_sub(nodes);
            usage.bytes = usage.bytes.saturating_sub(bytes);
        }
        for file in files {
            if let Some(f) = self.files.get_mut(&file) {
                f.app = to;
            }
        }
        Ok(())
    }

    /// The nodes of the subtree at `id` (itself included) and the data objects they point to.
    fn subtree(&self, id: NodeId) -> (u64, Vec<super::FileId>) {
        let (mut nodes, mut files, mut stack) = (0, Vec::new(), vec![id]);
        while let Some(id) = stack.pop() {
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            nodes += 1;
            match &node.kind {
                NodeKind::Container { children, .. } => stack.extend(children.values()),
                NodeKind::File(file) => files.push(*file),
                NodeKind::KeyValue { current, pending } => {
                    files.extend(current.iter().chain(pending));
                }
            }
        }
        (nodes, files)
    }

    /// Before `id` (at `path`) moves under `new_parent`: refuses moves that would blur which
    /// application owns what, and moves the charges of a subtree that changes application.
    pub(super) fn move_between_apps(
        &mut self,
        id: NodeId,
        new_parent: NodeId,
        new_name: &str,
        path: &str,
    ) -> Result<()> {
        let refuse = |reason: &str| {
            Err(Error::NotPermitted {
                operation: format!("moving {path}"),
                reason: reason.into(),
            })
        };
        if self.is_app_root(id) {
            return refuse("it holds the applications' directories");
        }
        if new_parent == ROOT && self.quotas.roots.iter().any(|r| **r == *new_name) {
            return refuse("that name is an application root (create it instead)");
        }
        let is_app = self
            .nodes
            .get(&id)
            .is_some_and(|n| self.is_app_root(n.parent));
        match (is_app, self.is_app_root(new_parent)) {
            // An application's directory under another root is still one.
            (true, true) => Ok(()),
            (true, false) => refuse("an application's directory stays directly under its root"),
            (false, true) => refuse("only applications' directories live directly there"),
            (false, false) => self.move_charges(id, self.app_of(id), self.app_of(new_parent)),
        }
    }
}
