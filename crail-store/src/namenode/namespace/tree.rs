//! Operations on the node tree: create, lookup, delete, rename, list, open for write.

use std::collections::BTreeMap;

use super::{Ctx, FileState, Namespace, Node, NodeId, NodeKind, ROOT};
use crate::error::{Error, Result};
use crate::proto as pb;
use crate::types::{NodeType, Placement};

/// Flags of a create.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateFlags {
    pub(crate) enumerable: bool,
    /// Re-put an existing keyvalue instead of failing.
    pub(crate) replace: bool,
}

/// A checked path: the text (for messages) and its components.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathRef<'a> {
    pub(crate) text: &'a str,
    pub(crate) components: &'a [&'a str],
}

impl PathRef<'_> {
    fn parent_text(&self) -> String {
        prefix(self.components, self.components.len().saturating_sub(1))
    }

    fn name(&self) -> Option<&str> {
        self.components.last().copied()
    }
}

fn prefix(components: &[&str], n: usize) -> String {
    format!("/{}", components[..n].join("/"))
}

impl Namespace {
    /// The node at `path`.
    fn resolve(&self, path: PathRef<'_>) -> Result<NodeId> {
        let mut id = ROOT;
        for (depth, name) in path.components.iter().enumerate() {
            let node = &self.nodes[&id];
            match &node.kind {
                NodeKind::Container { children, .. } => match children.get(*name) {
                    Some(child) => id = *child,
                    None => {
                        return Err(Error::NotFound {
                            path: path.text.to_owned(),
                        });
                    }
                },
                _ => {
                    return Err(Error::NotAContainer {
                        path: prefix(path.components, depth),
                        actual: node.node_type(),
                    });
                }
            }
        }
        Ok(id)
    }

    /// The container that holds (or would hold) the last component of `path`.
    fn resolve_parent(&self, path: PathRef<'_>) -> Result<(NodeId, NodeType)> {
        let parent_path = PathRef {
            text: path.text,
            components: &path.components[..path.components.len().saturating_sub(1)],
        };
        let id = self.resolve(parent_path).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound {
                path: path.parent_text(),
            },
            other => other,
        })?;
        let node = &self.nodes[&id];
        match &node.kind {
            NodeKind::Container { ty, .. } => Ok((id, *ty)),
            _ => Err(Error::NotAContainer {
                path: path.parent_text(),
                actual: node.node_type(),
            }),
        }
    }

    fn children_mut(&mut self, id: NodeId) -> Option<&mut BTreeMap<Box<str>, NodeId>> {
        match self.nodes.get_mut(&id).map(|n| &mut n.kind) {
            Some(NodeKind::Container { children, .. }) => Some(children),
            _ => None,
        }
    }

    fn child(&self, parent: NodeId, name: &str) -> Option<NodeId> {
        match &self.nodes[&parent].kind {
            NodeKind::Container { children, .. } => children.get(name).copied(),
            _ => None,
        }
    }

    /// Creates a node. Files and keyvalues come with a write lease on their (new) data. With
    /// `replace`, creating a keyvalue that exists starts a re-put: a new value that replaces
    /// the current one when its writer closes.
    pub(crate) fn create(
        &mut self,
        path: PathRef<'_>,
        ty: NodeType,
        placement: Placement,
        options: CreateFlags,
        ctx: &Ctx,
    ) -> Result<(pb::NodeInfo, u64)> {
        let Some(name) = path.name() else {
            return Err(Error::RootNotAllowed {
                operation: "created".into(),
            });
        };
        let (parent, parent_ty) = self.resolve_parent(path)?;
        if !parent_ty.may_hold(ty) {
            return Err(Error::InvalidChild {
                path: path.text.to_owned(),
                parent: parent_ty,
                child: ty,
            });
        }
        if let Some(existing) = self.child(parent, name) {
            let is_keyvalue = matches!(self.nodes[&existing].kind, NodeKind::KeyValue { .. });
            if ty == NodeType::KeyValue && is_keyvalue && options.replace {
                let file = self.start_value(existing, placement, path)?;
                let lease = self.grant_lease(file, ctx.now);
                let mut info = self.info(existing);
                info.file_id = file;
                info.size = 0;
                info.block_count = 0;
                return Ok((info, lease));
            }
            return Err(Error::AlreadyExists {
                path: path.text.to_owned(),
            });
        }
        let is_app = self.charge_node(parent)?;
        let id = self.next_node;
        self.next_node += 1;
        if is_app {
            self.new_app(id);
        }
        let kind = NodeKind::empty(ty, 0);
        self.nodes.insert(
            id,
            Node {
                parent,
                name: name.into(),
                kind,
                enumerable: options.enumerable,
                placement: placement.clone(),
                created: ctx.wall,
                modified: ctx.wall,
            },
        );
        if let Some(children) = self.children_mut(parent) {
            children.insert(name.into(), id);
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.modified = ctx.wall;
        }
        let mut lease = 0;
        let mut pending_file = 0;
        match ty {
            NodeType::File => {
                let file = self.new_file(id, placement, FileState::Live);
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.kind = NodeKind::File(file);
                }
                lease = self.grant_lease(file, ctx.now);
            }
            NodeType::KeyValue => {
                pending_file = self.start_value(id, placement, path)?;
                lease = self.grant_lease(pending_file, ctx.now);
            }
            _ => {}
        }
        self.record_created(id);
        let mut info = self.info(id);
        if pending_file != 0 {
            info.file_id = pending_file;
        }
        Ok((info, lease))
    }

    /// A new pending value of keyvalue `node`, unless too many are being written already.
    fn start_value(
        &mut self,
        node: NodeId,
        placement: Placement,
        path: PathRef<'_>,
    ) -> Result<u64> {
        let writing = match self.nodes.get(&node).map(|n| &n.kind) {
            Some(NodeKind::KeyValue { pending, .. }) => pending.len(),
            _ => 0,
        };
        if writing >= self.max_writers_per_key {
            return Err(Error::TooManyWriters {
                path: path.text.to_owned(),
                max: self.max_writers_per_key as u64,
            });
        }
        let file = self.new_file(node, placement, FileState::Pending);
        if let Some(NodeKind::KeyValue { pending, .. }) =
            self.nodes.get_mut(&node).map(|n| &mut n.kind)
        {
            pending.push(file);
        }
        Ok(file)
    }

    /// Looks a node up; for a keyvalue with `hold`, its current value stays readable until the
    /// hold is released or expires.
    pub(crate) fn lookup(
        &mut self,
        path: PathRef<'_>,
        hold: bool,
        ctx: &Ctx,
    ) -> Result<(pb::NodeInfo, u64)> {
        let id = self.resolve(path)?;
        let mut token = 0;
        if let NodeKind::KeyValue { current, .. } = &self.nodes[&id].kind {
            let Some(current) = *current else {
                // Being written for the first time: not visible yet.
                return Err(Error::NotFound {
                    path: path.text.to_owned(),
                });
            };
            if hold {
                token = self.grant_hold(current, ctx.now);
            }
        }
        Ok((self.info(id), token))
    }

    /// Deletes a node; containers with children only when `recursive`. Data is freed at once,
    /// except keyvalue values that readers hold.
    pub(crate) fn delete(&mut self, path: PathRef<'_>, recursive: bool, ctx: &Ctx) -> Result<()> {
        if path.components.is_empty() {
            return Err(Error::RootNotAllowed {
                operation: "deleted".into(),
            });
        }
        let id = self.resolve(path)?;
        let node = &self.nodes[&id];
        if let NodeKind::Container { children, .. } = &node.kind
            && !children.is_empty()
            && !recursive
        {
            return Err(Error::NotEmpty {
                path: path.text.to_owned(),
            });
        }
        let (parent, name) = (node.parent, node.name.clone());
        let app = self.app_of(id);
        if let Some(children) = self.children_mut(parent) {
            children.remove(&name);
        }
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.modified = ctx.wall;
        }
        self.record_deleted(id, ctx.wall);
        let mut stack = vec![id];
        while let Some(id) = stack.pop() {
            let Some(node) = self.nodes.remove(&id) else {
                continue;
            };
            self.uncharge_node(id, app);
            match node.kind {
                NodeKind::Container { children, .. } => stack.extend(children.into_values()),
                NodeKind::File(file) => self.free_file(file),
                NodeKind::KeyValue { current, pending } => {
                    if let Some(current) = current {
                        self.retire(current, ctx.now);
                    }
                    for file in pending {
                        self.free_file(file);
                    }
                }
            }
        }
        Ok(())
    }

    /// Moves a node atomically. The destination must not exist and its container must accept
    /// the node's type; a container cannot move into its own subtree.
    pub(crate) fn rename(&mut self, from: PathRef<'_>, to: PathRef<'_>, ctx: &Ctx) -> Result<()> {
        if from.components.is_empty() || to.components.is_empty() {
            return Err(Error::RootNotAllowed {
                operation: "renamed".into(),
            });
        }
        let id = self.resolve(from)?;
        if from.components == to.components {
            return Ok(());
        }
        let (new_parent, parent_ty) = self.resolve_parent(to)?;
        let ty = self.nodes[&id].node_type();
        if !parent_ty.may_hold(ty) {
            return Err(Error::InvalidChild {
                path: to.text.to_owned(),
                parent: parent_ty,
                child: ty,
            });
        }
        let Some(new_name) = to.name() else {
            return Err(Error::RootNotAllowed {
                operation: "renamed".into(),
            });
        };
        if self.child(new_parent, new_name).is_some() {
            return Err(Error::AlreadyExists {
                path: to.text.to_owned(),
            });
        }
        let mut ancestor = new_parent;
        loop {
            if ancestor == id {
                return Err(Error::MoveIntoItself {
                    from: from.text.to_owned(),
                    to: to.text.to_owned(),
                });
            }
            if ancestor == ROOT {
                break;
            }
            ancestor = self.nodes[&ancestor].parent;
        }
        self.check_subtree_fits(id, to)?;
        self.move_between_apps(id, new_parent, new_name, from.text)?;
        let node = &self.nodes[&id];
        let (old_parent, old_name) = (node.parent, node.name.clone());
        if let Some(children) = self.children_mut(old_parent) {
            children.remove(&old_name);
        }
        if let Some(children) = self.children_mut(new_parent) {
            children.insert(new_name.into(), id);
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.parent = new_parent;
            node.name = new_name.into();
        }
        for parent in [old_parent, new_parent] {
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.modified = ctx.wall;
            }
        }
        self.record_moved(id, new_parent, new_name, ctx.wall);
        Ok(())
    }

    /// After a move to `to`, every path in the subtree must still be within the path limits,
    /// or the moved nodes could no longer be named.
    fn check_subtree_fits(&self, id: NodeId, to: PathRef<'_>) -> Result<()> {
        let (mut deepest, mut longest) = (0usize, 0usize);
        let mut stack = vec![(id, 0usize, 0usize)];
        while let Some((node, depth, len)) = stack.pop() {
            deepest = deepest.max(depth);
            longest = longest.max(len);
            if let NodeKind::Container { children, .. } = &self.nodes[&node].kind {
                for (name, child) in children {
                    stack.push((*child, depth + 1, len + 1 + name.len()));
                }
            }
        }
        let depth = to.components.len() + deepest;
        if depth > self.limits.max_depth {
            return Err(Error::InvalidPath {
                path: to.text.to_owned(),
                problem: crate::path::PathProblem::TooDeep {
                    depth,
                    max: self.limits.max_depth,
                },
            });
        }
        let len = to.text.len() + longest;
        if len > self.limits.max_path_len {
            return Err(Error::InvalidPath {
                path: to.text.to_owned(),
                problem: crate::path::PathProblem::TooLong {
                    len,
                    max: self.limits.max_path_len,
                },
            });
        }
        Ok(())
    }

    /// One page of a container's enumerable children, in name order, after `start_after`.
    pub(crate) fn list(
        &self,
        path: PathRef<'_>,
        start_after: &str,
        limit: u32,
    ) -> Result<(Vec<pb::DirEntry>, bool)> {
        let id = self.resolve(path)?;
        let node = &self.nodes[&id];
        let NodeKind::Container { children, .. } = &node.kind else {
            return Err(Error::NotAContainer {
                path: path.text.to_owned(),
                actual: node.node_type(),
            });
        };
        let limit = if limit == 0 {
            self.list_page
        } else {
            limit.min(self.list_page)
        } as usize;
        let range = if start_after.is_empty() {
            children.range::<str, _>(..)
        } else {
            children.range::<str, _>((
                std::ops::Bound::Excluded(start_after),
                std::ops::Bound::Unbounded,
            ))
        };
        let mut visible = range.filter(|(_, child)| self.nodes[*child].enumerable);
        let entries: Vec<pb::DirEntry> = visible
            .by_ref()
            .take(limit)
            .map(|(name, child)| pb::DirEntry {
                name: name.to_string(),
                node: Some(self.info(*child)),
            })
            .collect();
        let more = visible.next().is_some();
        Ok((entries, more))
    }

    /// Takes the write lease of an existing file (append or overwrite).
    pub(crate) fn open_write(
        &mut self,
        path: PathRef<'_>,
        ctx: &Ctx,
    ) -> Result<(pb::NodeInfo, u64)> {
        let id = self.resolve(path)?;
        let node = &self.nodes[&id];
        let NodeKind::File(file) = node.kind else {
            return Err(Error::WrongType {
                path: path.text.to_owned(),
                expected: NodeType::File,
                actual: node.node_type(),
            });
        };
        if let Some(lease) = self.files.get(&file).and_then(|f| f.lease) {
            if lease.expires > ctx.now {
                return Err(Error::LeaseHeld {
                    path: path.text.to_owned(),
                    remaining_ms: lease
                        .expires
                        .saturating_duration_since(ctx.now)
                        .as_millis()
                        .try_into()
                        .unwrap_or(u64::MAX),
                });
            }
            // An expired lease is gone: its writer's uncommitted blocks go with it.
            self.drop_lease(file);
        }
        let lease = self.grant_lease(file, ctx.now);
        Ok((self.info(id), lease))
    }
}
