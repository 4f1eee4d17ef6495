//! The registry's tests: registration, re-registration, placement and liveness.

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
