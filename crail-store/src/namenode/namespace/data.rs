//! Operations on data objects: block allocation and location, close, lease and hold renewal and
//! release, and expiry of what clients abandoned.

use std::cmp::Reverse;
use std::time::Instant;

use super::{Ctx, FileId, FileState, Namespace, NodeKind};
use crate::error::{Error, Result};
use crate::proto as pb;

impl Namespace {
    fn check_batch(&self, count: u64) -> Result<()> {
        if count > self.max_blocks_per_request {
            return Err(Error::BatchTooLarge {
                count,
                max: self.max_blocks_per_request,
            });
        }
        Ok(())
    }

    /// The file behind `file` if `lease` is its live write lease.
    fn leased(&self, file: FileId, lease: u64, now: Instant) -> Result<()> {
        let f = self
            .files
            .get(&file)
            .ok_or(Error::UnknownFile { file_id: file })?;
        match f.lease {
            Some(token) if token.valid(lease, now) => Ok(()),
            _ => Err(Error::LeaseLost {
                path: self.file_path(file),
            }),
        }
    }

    /// Blocks `[first, first + count)` of a file being written: existing blocks are returned,
    /// missing ones allocated (all or none). Renews the lease.
    pub(crate) fn allocate(
        &mut self,
        file: FileId,
        lease: u64,
        first: u64,
        count: u64,
        ctx: &Ctx,
    ) -> Result<Vec<pb::BlockLocation>> {
        self.check_batch(count)?;
        self.leased(file, lease, ctx.now)?;
        let f = &self.files[&file];
        let have = f.blocks.len() as u64;
        if first > have {
            return Err(Error::BlockOutOfRange {
                path: self.file_path(file),
                index: first,
                blocks: have,
            });
        }
        let end = first + count;
        if end > self.max_blocks_per_file {
            return Err(Error::TooManyBlocks {
                path: self.file_path(file),
                blocks: end,
                max: self.max_blocks_per_file,
            });
        }
        // Existing blocks first: if one is lost, fail before allocating anything.
        let mut out = self.locations(file, first, end.min(have), true)?;
        if end > have {
            let (placement, app) = (f.placement.clone(), f.app);
            let bytes = (end - have) * self.registry.block_size();
            self.charge_bytes(app, bytes)?;
            let new = match self.registry.allocate(end - have, &placement, ctx.peer) {
                Ok(new) => new,
                Err(e) => {
                    self.uncharge_bytes(app, bytes);
                    return Err(e);
                }
            };
            if let Some(f) = self.files.get_mut(&file) {
                f.blocks.extend(new);
            }
            // Fresh blocks come from live datanodes only.
            out.extend(self.locations(file, have, end, true)?);
        }
        let expires = ctx.now + self.lease_timeout;
        if let Some(token) = self.files.get_mut(&file).and_then(|f| f.lease.as_mut()) {
            token.expires = expires;
        }
        Ok(out)
    }

    /// Locations of blocks `[first, first + count)`; lost blocks fail the whole request with
    /// the list of what is lost.
    pub(crate) fn locate(
        &self,
        file: FileId,
        first: u64,
        count: u64,
    ) -> Result<Vec<pb::BlockLocation>> {
        self.check_batch(count)?;
        let f = self
            .files
            .get(&file)
            .ok_or(Error::UnknownFile { file_id: file })?;
        let have = f.blocks.len() as u64;
        let end = first.saturating_add(count);
        if end > have {
            return Err(Error::BlockOutOfRange {
                path: self.file_path(file),
                index: first.max(have),
                blocks: have,
            });
        }
        self.locations(file, first, end, false)
    }

    /// Locations of blocks `[first, end)`, their grants allowing writes if `write` (only to
    /// the holder of the file's lease).
    fn locations(
        &self,
        file: FileId,
        first: u64,
        end: u64,
        write: bool,
    ) -> Result<Vec<pb::BlockLocation>> {
        let f = &self.files[&file];
        let mut out = Vec::with_capacity((end - first) as usize);
        let (mut lost, mut dead) = (Vec::new(), Vec::new());
        for index in first..end {
            match self.registry.locate(index, f.blocks[index as usize], write) {
                Ok(location) => out.push(location),
                Err(datanode) => {
                    lost.push(index);
                    if !dead.contains(&datanode) {
                        dead.push(datanode);
                    }
                }
            }
        }
        let now = std::time::Instant::now();
        if !dead.is_empty() && dead.iter().all(|d| self.registry.awaited(*d, now)) {
            return Err(Error::Recovering {
                datanodes: dead,
                retry_ms: 100,
            });
        }
        if !lost.is_empty() {
            return Err(Error::LostBlocks {
                path: self.file_path(file),
                blocks: lost,
                datanodes: dead,
            });
        }
        Ok(out)
    }

    /// Ends a write: sets the size, frees blocks past it, drops the lease. A keyvalue value
    /// becomes the current value (the last writer to close wins). With `keep` only the size
    /// is committed: the lease and every block stay (files only).
    pub(crate) fn close(
        &mut self,
        file: FileId,
        lease: u64,
        size: u64,
        keep: bool,
        ctx: &Ctx,
    ) -> Result<pb::NodeInfo> {
        self.leased(file, lease, ctx.now)?;
        let block_size = self.registry.block_size();
        let f = &self.files[&file];
        let capacity = f.blocks.len() as u64 * block_size;
        if size > capacity {
            return Err(Error::SizeBeyondBlocks {
                path: self.file_path(file),
                size,
                capacity,
            });
        }
        if keep {
            if f.state == FileState::Pending {
                return Err(Error::Unsupported {
                    feature: "committing a keyvalue value while writing it".into(),
                    reason: "a value becomes current only when its write is closed".into(),
                });
            }
            let node = f.node;
            if let Some(f) = self.files.get_mut(&file) {
                f.size = size;
            }
            if let Some(n) = self.nodes.get_mut(&node) {
                n.modified = ctx.wall;
            }
            self.record_committed(file);
            return Ok(self.info(node));
        }
        let keep = size.div_ceil(block_size) as usize;
        let (node, state) = (f.node, f.state);
        if let Some(f) = self.files.get_mut(&file) {
            let extra = f.blocks.split_off(keep);
            f.journaled = f.journaled.min(keep as u64);
            f.size = size;
            f.lease = None;
            f.state = FileState::Live;
            let app = f.app;
            self.free_blocks(app, &extra);
        }
        let mut replaced = None;
        if let Some(n) = self.nodes.get_mut(&node) {
            n.modified = ctx.wall;
            if let (NodeKind::KeyValue { current, pending }, FileState::Pending) =
                (&mut n.kind, state)
            {
                pending.retain(|p| *p != file);
                replaced = current.replace(file);
            }
        }
        if let Some(old) = replaced {
            self.retire(old, ctx.now);
        }
        self.record_committed(file);
        Ok(self.info(node))
    }

    /// Extends a write lease or a read hold.
    pub(crate) fn renew(&mut self, file: FileId, token: u64, ctx: &Ctx) -> Result<()> {
        let expires = ctx.now + self.lease_timeout;
        let f = self
            .files
            .get_mut(&file)
            .ok_or(Error::UnknownFile { file_id: file })?;
        if let Some(lease) = f.lease.as_mut().filter(|l| l.valid(token, ctx.now)) {
            lease.expires = expires;
            return Ok(());
        }
        if let Some(hold) = f.holds.get_mut(&token).filter(|e| **e > ctx.now) {
            *hold = expires;
            return Ok(());
        }
        Err(Error::LeaseLost {
            path: self.file_path(file),
        })
    }

    /// Gives up a read hold, or a write lease without closing (an abort: uncommitted blocks are
    /// freed, a keyvalue value being written is discarded).
    pub(crate) fn release(&mut self, file: FileId, token: u64, ctx: &Ctx) -> Result<()> {
        let f = self
            .files
            .get_mut(&file)
            .ok_or(Error::UnknownFile { file_id: file })?;
        if f.holds.remove(&token).is_some() {
            if f.state == FileState::Retired {
                self.retire(file, ctx.now);
            }
            return Ok(());
        }
        if f.lease.is_some_and(|l| l.id == token) {
            self.drop_lease(file);
            return Ok(());
        }
        Err(Error::LeaseLost {
            path: self.file_path(file),
        })
    }

    /// Drops a file's write lease and what its writer did not commit.
    pub(super) fn drop_lease(&mut self, file: FileId) {
        let Some(f) = self.files.get_mut(&file) else {
            return;
        };
        f.lease = None;
        if f.state == FileState::Pending {
            let node = f.node;
            if let Some(NodeKind::KeyValue { pending, .. }) =
                self.nodes.get_mut(&node).map(|n| &mut n.kind)
            {
                pending.retain(|p| *p != file);
            }
            self.free_file(file);
            return;
        }
        let keep = f.size.div_ceil(self.registry.block_size()) as usize;
        let extra = f.blocks.split_off(keep.min(f.blocks.len()));
        f.journaled = f.journaled.min(f.blocks.len() as u64);
        let app = f.app;
        self.free_blocks(app, &extra);
    }

    /// Expires leases and holds whose time has come: abandoned writes are rolled back, replaced
    /// keyvalue values nobody holds any more are freed. Returns how many tokens expired.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(Reverse((at, file))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(f) = self.files.get_mut(&file) else {
                continue;
            };
            f.scheduled = false;
            let holds_before = f.holds.len();
            f.holds.retain(|_, expires| *expires > now);
            expired += holds_before - f.holds.len();
            if f.lease.is_some_and(|l| l.expires <= now) {
                expired += 1;
                tracing::debug!(file, "write lease expired");
                self.drop_lease(file);
            }
            let Some(f) = self.files.get(&file) else {
                continue;
            };
            if f.state == FileState::Retired && f.holds.is_empty() {
                self.free_file(file);
                continue;
            }
            let next = f
                .lease
                .iter()
                .map(|t| t.expires)
                .chain(f.holds.values().copied())
                .min();
            if let Some(next) = next {
                self.schedule(file, next);
            }
        }
        expired
    }
}
