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
mod tests {
    use super::*;

    const BS: u64 = 1 << 20;

    impl Registry {
        /// Registers a datanode without an identity: a new one each time.
        fn join(&mut self, spec: &DatanodeSpec, now: Instant) -> Result<(u64, u64)> {
            self.register(spec, &[], &[], |_| Vec::new(), now)
                .map(|r| (r.id, r.incarnation))
        }
    }

    fn spec(host: &str, port: u16, class: u32, blocks: u64) -> DatanodeSpec {
        let host: IpAddr = host.parse().unwrap();
        DatanodeSpec {
            host,
            address: SocketAddr::new(host, port),
            tier: if class == 0 { "dram" } else { "flash" }.into(),
            storage_class: class,
            capacity: blocks * BS,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    impl Registry {
        fn incarnation(&self, id: u64) -> u64 {
            self.datanodes[&id].incarnation
        }
    }

    #[test]
    fn heartbeats_and_deregistration_need_the_registration_token() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        let (id, token) = r.join(&spec("127.0.0.2", 1, 0, 1), now).unwrap();
        assert!(matches!(
            r.heartbeat(id, token ^ 1, now),
            Err(Error::UnknownDatanode { .. })
        ));
        assert!(r.deregister(id, token.wrapping_add(1)).is_err());
        r.heartbeat(id, token, now).unwrap();
        r.deregister(id, token).unwrap();
    }

    fn key() -> GrantKey {
        GrantKey::derive(None, &[7; 32])
    }

    #[test]
    fn a_block_allocated_again_gets_a_new_generation_and_grant() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        r.join(&spec("127.0.0.2", 1, 0, 1), now).unwrap();
        let first = r
            .allocate(1, &Placement::default(), ip("127.0.0.2"))
            .unwrap()[0];
        r.free(&[first]);
        let again = r
            .allocate(1, &Placement::default(), ip("127.0.0.2"))
            .unwrap()[0];
        assert_eq!((again.datanode, again.block), (first.datanode, first.block));
        assert!(again.generation > first.generation);
        let grant = |addr, write| r.locate(0, addr, write).unwrap().grant.unwrap();
        let (old, new) = (grant(first, true), grant(again, true));
        assert_eq!((old.block, new.block), (0, 0));
        assert_ne!(old.mac, new.mac);
        assert!(!grant(again, false).write);
        key()
            .check(Some(&new), first.datanode, 0, BS, true)
            .unwrap();
    }

    #[test]
    fn fills_class_zero_everywhere_before_class_one() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        let a0 = r.join(&spec("127.0.0.2", 1, 0, 2), now).unwrap().0;
        let b0 = r.join(&spec("127.0.0.3", 1, 0, 2), now).unwrap().0;
        let a1 = r.join(&spec("127.0.0.2", 2, 1, 10), now).unwrap().0;
        let got = r
            .allocate(6, &Placement::default(), ip("127.0.0.2"))
            .unwrap();
        let owners: Vec<u64> = got.iter().map(|b| b.datanode).collect();
        // Local class 0 first, then remote class 0, then class 1.
        assert_eq!(owners, [a0, a0, b0, b0, a1, a1]);
    }

    #[test]
    fn host_first_takes_local_flash_before_remote_dram() {
        let now = Instant::now();
        let layout = |r: &mut Registry| {
            let a0 = r.join(&spec("127.0.0.2", 1, 0, 2), now).unwrap().0;
            let b0 = r.join(&spec("127.0.0.3", 1, 0, 2), now).unwrap().0;
            let a1 = r.join(&spec("127.0.0.2", 2, 1, 2), now).unwrap().0;
            let b1 = r.join(&spec("127.0.0.3", 2, 1, 10), now).unwrap().0;
            (a0, b0, a1, b1)
        };
        // The namenode's default for placements that name none.
        let mut r = Registry::new(BS, 100, key()).tiering(Tiering::HostFirst);
        let (a0, b0, a1, b1) = layout(&mut r);
        let got = r
            .allocate(7, &Placement::default(), ip("127.0.0.2"))
            .unwrap();
        let owners: Vec<u64> = got.iter().map(|b| b.datanode).collect();
        // Local dram, local flash, then the other host's dram and flash.
        assert_eq!(owners, [a0, a0, a1, a1, b0, b0, b1]);

        // Per file, against the namenode's default.
        let mut r = Registry::new(BS, 100, key());
        let (a0, b0, a1, _) = layout(&mut r);
        let host_first = Placement::default().tiering(Tiering::HostFirst);
        let got = r.allocate(3, &host_first, ip("127.0.0.2")).unwrap();
        let owners: Vec<u64> = got.iter().map(|b| b.datanode).collect();
        assert_eq!(owners, [a0, a0, a1]);
        let got = r
            .allocate(1, &Placement::default(), ip("127.0.0.2"))
            .unwrap();
        assert_eq!(got[0].datanode, b0, "class-first by default: remote dram");

        // An explicit class stays a hard requirement.
        let mut r = Registry::new(BS, 100, key()).tiering(Tiering::HostFirst);
        let (_, b0, _, _) = layout(&mut r);
        let dram = Placement::default().storage_class(0);
        let got = r.allocate(4, &dram, ip("127.0.0.2")).unwrap();
        assert_eq!(got.iter().filter(|b| b.datanode == b0).count(), 2);
        assert!(matches!(
            r.allocate(1, &dram, ip("127.0.0.2")),
            Err(Error::StoreFull { .. })
        ));
    }

    #[test]
    fn spreads_round_robin_when_the_requester_has_no_datanode() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        let a = r.join(&spec("127.0.0.2", 1, 0, 10), now).unwrap().0;
        let b = r.join(&spec("127.0.0.3", 1, 0, 10), now).unwrap().0;
        let got = r
            .allocate(4, &Placement::default(), ip("127.0.0.9"))
            .unwrap();
        let owners: Vec<u64> = got.iter().map(|b| b.datanode).collect();
        assert_eq!(owners, [a, b, a, b]);
    }

    #[test]
    fn spread_takes_datanodes_in_turn_even_from_a_host_that_has_one() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        let a = r.join(&spec("127.0.0.2", 1, 0, 10), now).unwrap().0;
        let b = r.join(&spec("127.0.0.3", 1, 0, 10), now).unwrap().0;
        let c = r.join(&spec("127.0.0.4", 1, 0, 10), now).unwrap().0;
        let got = r
            .allocate(6, &Placement::default().spread(), ip("127.0.0.3"))
            .unwrap();
        let owners: Vec<u64> = got.iter().map(|b| b.datanode).collect();
        assert_eq!(owners.len(), 6);
        for d in [a, b, c] {
            assert_eq!(owners.iter().filter(|&&o| o == d).count(), 2, "{owners:?}");
        }
        assert_ne!(owners[0], owners[1]);
        // A location still wins over spreading.
        let pinned = Placement::default().spread().location(ip("127.0.0.4"));
        let got = r.allocate(2, &pinned, ip("127.0.0.3")).unwrap();
        assert!(got.iter().all(|x| x.datanode == c));
    }

    #[test]
    fn explicit_class_and_host_are_hard_requirements() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        r.join(&spec("127.0.0.2", 1, 0, 10), now).unwrap();
        let flash = r.join(&spec("127.0.0.3", 2, 1, 1), now).unwrap().0;
        let placement = Placement::default().storage_class(1);
        let got = r.allocate(1, &placement, ip("127.0.0.2")).unwrap();
        assert_eq!(got[0].datanode, flash);
        let err = r.allocate(1, &placement, ip("127.0.0.2")).unwrap_err();
        assert!(matches!(
            err,
            Error::StoreFull {
                storage_class: Some(1),
                ..
            }
        ));
        let on_host = Placement::default().location(ip("127.0.0.4"));
        assert!(matches!(
            r.allocate(1, &on_host, ip("127.0.0.2")),
            Err(Error::StoreFull {
                location: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn store_full_allocates_nothing() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        let id = r.join(&spec("127.0.0.2", 1, 0, 3), now).unwrap().0;
        assert!(
            r.allocate(4, &Placement::default(), ip("127.0.0.2"))
                .is_err()
        );
        let info = r.info(now);
        assert_eq!(info[0].used_blocks, 0);
        let got = r
            .allocate(3, &Placement::default(), ip("127.0.0.2"))
            .unwrap();
        assert!(got.iter().all(|b| b.datanode == id));
        let mut numbers: Vec<u64> = got.iter().map(|b| b.block).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, [0, 1, 2]);
    }

    #[test]
    fn dead_datanodes_get_no_blocks_and_report_lost_locations() {
        let t0 = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        let a = r.join(&spec("127.0.0.2", 1, 0, 10), t0).unwrap().0;
        let b = r.join(&spec("127.0.0.3", 1, 0, 10), t0).unwrap().0;
        let block = r
            .allocate(1, &Placement::default(), ip("127.0.0.2"))
            .unwrap()[0];
        assert_eq!(block.datanode, a);
        let later = t0 + std::time::Duration::from_secs(5);
        r.heartbeat(b, r.incarnation(b), later).unwrap();
        assert_eq!(r.reap(later, std::time::Duration::from_secs(1)), [a]);
        assert_eq!(r.locate(0, block, false), Err(a));
        let next = r
            .allocate(1, &Placement::default(), ip("127.0.0.2"))
            .unwrap();
        assert_eq!(next[0].datanode, b);
        assert!(matches!(
            r.heartbeat(a, r.incarnation(a), later),
            Err(Error::UnknownDatanode { .. })
        ));
    }

    #[test]
    fn re_registering_an_address_replaces_the_old_datanode() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 100, key());
        let old = r.join(&spec("127.0.0.2", 1, 0, 10), now).unwrap().0;
        let new = r.join(&spec("127.0.0.2", 1, 0, 10), now).unwrap().0;
        assert_ne!(old, new);
        assert!(!r.is_alive(old));
        assert!(r.is_alive(new));
    }

    #[test]
    fn the_registry_is_bounded() {
        let now = Instant::now();
        let mut r = Registry::new(BS, 2, key());
        let a = r.join(&spec("127.0.0.2", 1, 0, 1), now).unwrap().0;
        r.join(&spec("127.0.0.3", 1, 7, 1), now).unwrap();
        assert!(matches!(
            r.join(&spec("127.0.0.4", 1, 0, 1), now),
            Err(Error::InvalidDatanode { .. })
        ));
        // Dead ones leave room, empty classes go, and only the newest dead are remembered.
        r.deregister(a, r.incarnation(a)).unwrap();
        for i in 0..(DEAD_KEPT as u16 + 10) {
            let id = r.join(&spec("127.0.0.5", 100 + i, 9, 1), now).unwrap().0;
            r.deregister(id, r.incarnation(id)).unwrap();
        }
        assert_eq!(r.classes.len(), 1);
        assert_eq!(r.info(now).len(), 1 + DEAD_KEPT);
        assert!(!r.is_alive(a));
        assert_eq!(
            r.locate(
                0,
                BlockAddr {
                    datanode: a,
                    block: 0,
                    generation: 1,
                },
                false,
            ),
            Err(a)
        );
    }

    #[test]
    fn refuses_datanodes_smaller_than_a_block() {
        let mut r = Registry::new(BS, 100, key());
        let mut tiny = spec("127.0.0.2", 1, 0, 1);
        tiny.capacity = BS - 1;
        assert!(matches!(
            r.join(&tiny, Instant::now()),
            Err(Error::InvalidDatanode { .. })
        ));
    }
}
