//! Datanodes, their free blocks, liveness, and block placement.
//!
//! Placement walks storage classes fastest first. By default (`Tiering::ClassFirst`, Crail's
//! horizontal tiering) class 0 fills across the whole cluster before class 1 gets a block, and
//! inside a class the requesting client's host comes first, then the others round robin; with
//! `Tiering::HostFirst` every class of the requesting host comes before any other host. An
//! explicit class or host in the placement is a hard requirement. A request for several blocks
//! gets all of them or none.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::grant::GrantKey;
use crate::proto as pb;
use crate::types::{DatanodeSpec, Placement, Tiering};

/// Where one block lives: a datanode and a block number inside its storage, and the
/// generation of this allocation of it (see [`crate::grant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockAddr {
    pub(crate) datanode: u64,
    pub(crate) block: u64,
    pub(crate) generation: u64,
}

#[derive(Debug)]
struct Datanode {
    host: IpAddr,
    address: SocketAddr,
    tier: String,
    class: u32,
    capacity: u64,
    /// Blocks below this number have been handed out at least once.
    fresh: u64,
    /// Blocks handed out and returned.
    free: Vec<u64>,
    alive: bool,
    last_heartbeat: Instant,
    /// The random token of this registration (heartbeats and deregistration carry it).
    incarnation: u64,
    /// The tier's own identity, with which it registers again (empty: none).
    uuid: Vec<u8>,
    /// Blocks files hold that it did not report when it registered again: lost.
    missing: HashSet<u64>,
}

impl Datanode {
    /// A datanode as `spec` describes it, with none of its blocks handed out.
    fn new(
        spec: &DatanodeSpec,
        capacity: u64,
        uuid: &[u8],
        incarnation: u64,
        now: Instant,
    ) -> Self {
        Self {
            host: spec.host,
            address: spec.address,
            tier: spec.tier.clone(),
            class: spec.storage_class,
            capacity,
            fresh: 0,
            free: Vec::new(),
            alive: incarnation != 0,
            last_heartbeat: now,
            incarnation,
            uuid: uuid.to_vec(),
            missing: HashSet::new(),
        }
    }

    fn free_blocks(&self) -> u64 {
        self.capacity - self.fresh + self.free.len() as u64
    }

    fn take(&mut self) -> Option<u64> {
        if let Some(block) = self.free.pop() {
            return Some(block);
        }
        (self.fresh < self.capacity).then(|| {
            self.fresh += 1;
            self.fresh - 1
        })
    }
}

/// What a registration gave: the datanode's id and incarnation, and for a datanode
/// registering again, how many of its blocks were re-adopted and lost.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Registered {
    pub(crate) id: u64,
    pub(crate) incarnation: u64,
    pub(crate) adopted: u64,
    pub(crate) lost: u64,
}

#[derive(Debug, Default)]
struct ClassGroup {
    members: Vec<u64>,
    cursor: usize,
}

/// Dead datanodes kept for `crail status`; older ones are forgotten (their blocks still read as
/// lost: a block whose datanode is unknown is lost).
const DEAD_KEPT: usize = 256;

#[derive(Debug)]
pub(crate) struct Registry {
    block_size: u64,
    max_datanodes: usize,
    datanodes: BTreeMap<u64, Datanode>,
    classes: BTreeMap<u32, ClassGroup>,
    dead: VecDeque<u64>,
    next_id: u64,
    /// The order of classes and hosts for placements that name none.
    tiering: Tiering,
    /// Ids by tier identity, forgotten dead datanodes included.
    by_uuid: HashMap<Vec<u8>, u64>,
    /// Datanodes a restarted namenode knows from its journal and expects back, until when.
    awaited: HashSet<u64>,
    awaited_until: Option<Instant>,
    /// Signs the grants that go with block locations.
    grants: GrantKey,
    /// The generation the last allocated block got: every allocation gets the next. It
    /// starts at the wall clock in microseconds, so a restarted namenode's generations are
    /// newer than any its datanodes saw before.
    generation: u64,
}

impl Registry {
    pub(crate) fn new(block_size: u64, max_datanodes: usize, grants: GrantKey) -> Self {
        Self {
            grants,
            generation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2)),
            block_size,
            max_datanodes,
            datanodes: BTreeMap::new(),
            classes: BTreeMap::new(),
            dead: VecDeque::new(),
            next_id: 1,
            tiering: Tiering::default(),
            by_uuid: HashMap::new(),
            awaited: HashSet::new(),
            awaited_until: None,
        }
    }

    /// With `tiering` for placements that name none.
    pub(crate) fn tiering(mut self, tiering: Tiering) -> Self {
        self.tiering = tiering;
        self
    }

    pub(crate) fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Registers a datanode tier: its id and incarnation token, and whether the id is new. A
    /// tier that registered before under `uuid` gets its old id back: of the blocks files hold
    /// there (`held`: block and generation), those it reports (`report`) with the same
    /// generation are re-adopted and the rest are lost; every other block is free. A live
    /// datanode registered at the same address under another identity is taken to have
    /// restarted: it is declared dead (its old blocks are lost) and replaced.
    pub(crate) fn register(
        &mut self,
        spec: &DatanodeSpec,
        uuid: &[u8],
        report: &[(u64, u64)],
        held: impl FnOnce(u64) -> Vec<(u64, u64)>,
        now: Instant,
    ) -> Result<Registered> {
        let capacity = spec.capacity / self.block_size;
        if capacity == 0 {
            return Err(Error::InvalidDatanode {
                reason: format!(
                    "capacity of {} bytes is less than one block of {} bytes",
                    spec.capacity, self.block_size
                ),
            });
        }
        if spec.tier.is_empty() || spec.tier.len() > 64 {
            return Err(Error::InvalidDatanode {
                reason: "tier name must have 1 to 64 bytes".into(),
            });
        }
        if uuid.len() > 64 {
            return Err(Error::InvalidDatanode {
                reason: "identity must have at most 64 bytes".into(),
            });
        }
        let returning = self.id_of(uuid);
        let restarted: Vec<u64> = self
            .datanodes
            .iter()
            .filter(|(id, d)| d.alive && d.address == spec.address && Some(**id) != returning)
            .map(|(id, _)| *id)
            .collect();
        for id in restarted {
            tracing::warn!(datanode = id, address = %spec.address, "datanode re-registered: old blocks are lost");
            self.kill(id);
        }
        let alive = self.datanodes.values().filter(|d| d.alive).count();
        let already = returning.is_some_and(|id| self.datanodes.get(&id).is_some_and(|d| d.alive));
        if alive >= self.max_datanodes && !already {
            return Err(Error::InvalidDatanode {
                reason: format!(
                    "the registry is full ({} live datanodes, namenode.max_datanodes)",
                    self.max_datanodes
                ),
            });
        }
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|e| std::io::Error::other(e.to_string()))?;
        let incarnation = u64::from_le_bytes(token).max(1);
        let (id, new) = match returning {
            Some(id) => (id, false),
            None => {
                self.next_id += 1;
                (self.next_id - 1, true)
            }
        };
        if let Some(old) = self.datanodes.get(&id)
            && old.alive
        {
            self.leave_class(id);
        }
        self.dead.retain(|d| *d != id);
        self.awaited.remove(&id);
        let mut datanode = Datanode::new(spec, capacity, uuid, incarnation, now);
        let (mut adopted, mut lost) = (0u64, 0u64);
        if !new {
            let reported: HashMap<u64, u64> = report.iter().copied().collect();
            let mut used = vec![false; usize::try_from(capacity).unwrap_or(0)];
            for (block, generation) in held(id) {
                match used.get_mut(usize::try_from(block).unwrap_or(usize::MAX)) {
                    Some(slot) if reported.get(&block) == Some(&generation) => {
                        *slot = true;
                        adopted += 1;
                    }
                    Some(slot) => {
                        // Not here any more: lost, and its place taken only once freed.
                        *slot = true;
                        datanode.missing.insert(block);
                        lost += 1;
                    }
                    None => lost += 1,
                }
            }
            datanode.fresh = used.iter().rposition(|u| *u).map_or(0, |i| i as u64 + 1);
            datanode.free = (0..datanode.fresh)
                .rev()
                .filter(|b| !used[*b as usize])
                .collect();
        }
        self.datanodes.insert(id, datanode);
        if !uuid.is_empty() {
            self.by_uuid.insert(uuid.to_vec(), id);
        }
        self.classes
            .entry(spec.storage_class)
            .or_default()
            .members
            .push(id);
        if new {
            tracing::info!(datanode = id, host = %spec.host, address = %spec.address, tier = %spec.tier, class = spec.storage_class, blocks = capacity, "datanode registered");
        } else {
            tracing::info!(datanode = id, address = %spec.address, adopted, lost, "datanode registered again: its blocks re-adopted");
        }
        Ok(Registered {
            id,
            incarnation,
            adopted,
            lost,
        })
    }

    /// The id of the tier that registered under `uuid`, if one did.
    pub(crate) fn id_of(&self, uuid: &[u8]) -> Option<u64> {
        (!uuid.is_empty())
            .then(|| self.by_uuid.get(uuid).copied())
            .flatten()
    }

    /// A datanode known from the journal of a namenode that restarted: dead until it registers
    /// again with `uuid`.
    pub(crate) fn restore(&mut self, id: u64, uuid: &[u8], spec: &DatanodeSpec) {
        self.next_id = self.next_id.max(id + 1);
        if !uuid.is_empty() {
            self.by_uuid.insert(uuid.to_vec(), id);
        }
        let capacity = spec.capacity / self.block_size.max(1);
        if !self.datanodes.contains_key(&id) {
            self.dead.push_back(id);
        }
        self.awaited.insert(id);
        // Incarnation 0: dead until it registers again.
        self.datanodes
            .insert(id, Datanode::new(spec, capacity, uuid, 0, Instant::now()));
    }

    /// The datanodes restored from a journal are waited for until `until`: their blocks are
    /// not lost meanwhile, only not readable yet.
    pub(crate) fn await_returns(&mut self, until: Instant) {
        self.awaited_until = Some(until);
    }

    /// Whether datanode `id` is one a restarted namenode still waits for.
    pub(crate) fn awaited(&self, id: u64, now: Instant) -> bool {
        self.awaited.contains(&id) && self.awaited_until.is_some_and(|until| now < until)
    }

    /// Every datanode known, for a snapshot: id, identity and what it registered as.
    pub(crate) fn known(&self) -> Vec<(u64, Vec<u8>, DatanodeSpec)> {
        self.datanodes
            .iter()
            .map(|(id, d)| {
                (
                    *id,
                    d.uuid.clone(),
                    DatanodeSpec {
                        host: d.host,
                        address: d.address,
                        tier: d.tier.clone(),
                        storage_class: d.class,
                        capacity: d.capacity * self.block_size,
                    },
                )
            })
            .collect()
    }

    /// A journal holds a block of `generation`: later allocations get newer ones.
    pub(crate) fn saw_generation(&mut self, generation: u64) {
        self.generation = self.generation.max(generation);
    }

    /// A heartbeat of datanode `id` in its `incarnation` (another one's token is as good as
    /// an unknown id: that datanode must register again).
    pub(crate) fn heartbeat(&mut self, id: u64, incarnation: u64, now: Instant) -> Result<()> {
        match self.datanodes.get_mut(&id) {
            Some(d) if d.alive && d.incarnation == incarnation => {
                d.last_heartbeat = now;
                Ok(())
            }
            _ => Err(Error::UnknownDatanode { id }),
        }
    }

    pub(crate) fn deregister(&mut self, id: u64, incarnation: u64) -> Result<()> {
        match self.datanodes.get(&id) {
            Some(d) if d.alive && d.incarnation == incarnation => {
                tracing::info!(datanode = id, "datanode left");
                self.kill(id);
                Ok(())
            }
            _ => Err(Error::UnknownDatanode { id }),
        }
    }

    /// Declares dead every live datanode silent for longer than `dead_after`; returns their ids.
    pub(crate) fn reap(&mut self, now: Instant, dead_after: std::time::Duration) -> Vec<u64> {
        let silent: Vec<u64> = self
            .datanodes
            .iter()
            .filter(|(_, d)| {
                d.alive && now.saturating_duration_since(d.last_heartbeat) > dead_after
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &silent {
            tracing::warn!(
                datanode = id,
                "datanode missed its heartbeats: declared dead, its blocks are lost"
            );
            self.kill(*id);
        }
        silent
    }

    /// Takes `id` out of its class's placement rotation.
    fn leave_class(&mut self, id: u64) {
        let Some(class) = self.datanodes.get(&id).map(|d| d.class) else {
            return;
        };
        if let Some(group) = self.classes.get_mut(&class) {
            group.members.retain(|m| *m != id);
            if group.members.is_empty() {
                self.classes.remove(&class);
            }
        }
    }

    fn kill(&mut self, id: u64) {
        self.leave_class(id);
        let Some(d) = self.datanodes.get_mut(&id) else {
            return;
        };
        d.alive = false;
        d.free = Vec::new();
        d.missing = HashSet::new();
        self.dead.push_back(id);
        while self.dead.len() > DEAD_KEPT {
            if let Some(oldest) = self.dead.pop_front() {
                self.datanodes.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn is_alive(&self, id: u64) -> bool {
        self.datanodes.get(&id).is_some_and(|d| d.alive)
    }

    /// Allocates `count` blocks as the placement allows, preferring `requester`'s host.
    pub(crate) fn allocate(
        &mut self,
        count: u64,
        placement: &Placement,
        requester: IpAddr,
    ) -> Result<Vec<BlockAddr>> {
        let classes: Vec<u32> = match placement.storage_class {
            Some(class) => vec![class],
            None => self.classes.keys().copied().collect(),
        };
        let mut taken = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for _ in 0..count {
            match self.pick(&classes, placement, requester) {
                Some(addr) => taken.push(addr),
                None => {
                    self.free(&taken);
                    return Err(Error::StoreFull {
                        blocks: count,
                        storage_class: placement.storage_class,
                        location: placement.location,
                    });
                }
            }
        }
        Ok(taken)
    }

    fn pick(
        &mut self,
        classes: &[u32],
        placement: &Placement,
        requester: IpAddr,
    ) -> Option<BlockAddr> {
        let preferred = placement.location.unwrap_or(requester);
        // Pass 0: the preferred host (skipped when spreading). Pass 1 (only without an
        // explicit host): anyone.
        let passes = if placement.location.is_some() { 1 } else { 2 };
        let first = usize::from(placement.spread && placement.location.is_none());
        let host_first = placement.tiering.unwrap_or(self.tiering) == Tiering::HostFirst;
        if host_first {
            for pass in first..passes {
                for class in classes {
                    if let Some(addr) = self.pick_in(*class, pass == 0, preferred) {
                        return Some(addr);
                    }
                }
            }
        } else {
            for class in classes {
                for pass in first..passes {
                    if let Some(addr) = self.pick_in(*class, pass == 0, preferred) {
                        return Some(addr);
                    }
                }
            }
        }
        None
    }

    /// A block of `class`, from the class's datanodes in turn (only those on `preferred` if
    /// `only_preferred`).
    fn pick_in(
        &mut self,
        class: u32,
        only_preferred: bool,
        preferred: IpAddr,
    ) -> Option<BlockAddr> {
        let group = self.classes.get_mut(&class)?;
        let len = group.members.len();
        for step in 0..len {
            let slot = (group.cursor + step) % len;
            let id = group.members[slot];
            let Some(d) = self.datanodes.get_mut(&id) else {
                continue;
            };
            if only_preferred && d.host != preferred {
                continue;
            }
            if let Some(block) = d.take() {
                group.cursor = slot + 1;
                self.generation += 1;
                return Some(BlockAddr {
                    datanode: id,
                    block,
                    generation: self.generation,
                });
            }
        }
        None
    }

    /// Returns blocks to their datanodes (blocks of dead datanodes are simply forgotten).
    pub(crate) fn free(&mut self, blocks: &[BlockAddr]) {
        for b in blocks {
            if let Some(d) = self.datanodes.get_mut(&b.datanode)
                && d.alive
            {
                d.missing.remove(&b.block);
                d.free.push(b.block);
            }
        }
    }

    /// The wire form of a block's location, with a grant that allows writes if `write`, or
    /// the id of the dead datanode that held it.
    pub(crate) fn locate(
        &self,
        index: u64,
        addr: BlockAddr,
        write: bool,
    ) -> Result<pb::BlockLocation, u64> {
        match self.datanodes.get(&addr.datanode) {
            Some(d) if d.alive && !d.missing.contains(&addr.block) => {
                let offset = addr.block * self.block_size;
                Ok(pb::BlockLocation {
                    index,
                    datanode: addr.datanode,
                    address: d.address.to_string(),
                    host: d.host.to_string(),
                    offset,
                    storage_class: d.class,
                    grant: Some(
                        self.grants
                            .sign(addr.datanode, offset, addr.generation, write),
                    ),
                })
            }
            _ => Err(addr.datanode),
        }
    }

    pub(crate) fn info(&self, now: Instant) -> Vec<pb::DatanodeInfo> {
        self.datanodes
            .iter()
            .map(|(id, d)| pb::DatanodeInfo {
                id: *id,
                host: d.host.to_string(),
                address: d.address.to_string(),
                tier: d.tier.clone(),
                storage_class: d.class,
                capacity_blocks: d.capacity,
                used_blocks: if d.alive {
                    d.capacity - d.free_blocks()
                } else {
                    0
                },
                alive: d.alive,
                last_heartbeat_ms_ago: now
                    .saturating_duration_since(d.last_heartbeat)
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
