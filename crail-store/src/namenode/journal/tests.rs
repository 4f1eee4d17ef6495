//! The journal rebuilds exactly the namespace that wrote it: random operations, a restart,
//! and the two namespaces' snapshots compared record for record; with snapshots taken along the
//! way; with a torn tail; with damage in the middle.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use super::{Compact, Journal};
use crate::config::NamenodeConfig;
use crate::grant::GrantKey;
use crate::namenode::namespace::{CreateFlags, Ctx, Namespace, PathRef};
use crate::namenode::service::open_journal;
use crate::proto as pb;
use crate::types::{DatanodeSpec, NodeType, Placement};
use crate::units::ByteSize;

const BLOCK: u64 = 64 << 10;

fn config(dir: &Path, snapshot_every: u64) -> NamenodeConfig {
    NamenodeConfig {
        block_size: ByteSize(BLOCK),
        journal: Some(dir.to_owned()),
        journal_snapshot_every: ByteSize(snapshot_every),
        ..Default::default()
    }
}

fn open(config: &NamenodeConfig) -> crate::Result<(Namespace, Arc<Journal>)> {
    let mut ns = Namespace::new(config, GrantKey::derive(None, &[1; 32]))?;
    let journal = open_journal(
        config.journal.as_deref().unwrap_or(Path::new(".")),
        config,
        &mut ns,
    )?;
    Ok((ns, journal))
}

fn dump(ns: &Namespace) -> Vec<pb::JournalRecord> {
    let mut out = Vec::new();
    Compact::dump(ns, &mut |r| out.push(r));
    out
}

fn ctx() -> Ctx {
    Ctx::new(IpAddr::from([127, 0, 0, 2]), true)
}

/// A small deterministic generator (xorshift), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const NAMES: [&str; 5] = ["/a", "/a/b", "/crail-shuffle", "/crail-shuffle/app", "/c"];

fn path_of(rng: &mut Rng) -> String {
    let base = NAMES[rng.below(NAMES.len() as u64) as usize];
    match rng.below(3) {
        0 => base.to_owned(),
        _ => format!("{base}/f{}", rng.below(6)),
    }
}

fn with_path<R>(text: &str, f: impl FnOnce(PathRef<'_>) -> R) -> R {
    let components: Vec<&str> = text.split('/').filter(|c| !c.is_empty()).collect();
    f(PathRef {
        text,
        components: &components,
    })
}

/// Writes a file or keyvalue at `path` of `size` bytes, committed (with `keep` commits along
/// the way for files).
fn write(ns: &mut Namespace, path: &str, ty: NodeType, size: u64, keep: bool) {
    let flags = CreateFlags {
        enumerable: true,
        replace: true,
    };
    let Ok((info, lease)) = with_path(path, |p| {
        ns.create(p, ty, Placement::default(), flags, &ctx())
    }) else {
        return;
    };
    let blocks = size.div_ceil(BLOCK);
    if blocks > 0 && ns.allocate(info.file_id, lease, 0, blocks, &ctx()).is_err() {
        return;
    }
    if keep && ty == NodeType::File {
        let _ = ns.close(info.file_id, lease, size / 2, true, &ctx());
        // More blocks than the size needs: those past it are not journaled.
        let _ = ns.allocate(info.file_id, lease, blocks, 2, &ctx());
    }
    ns.close(info.file_id, lease, size, false, &ctx())
        .expect("closing a write");
}

fn random_ops(ns: &mut Namespace, rng: &mut Rng, count: usize) {
    for _ in 0..count {
        let path = path_of(rng);
        let flags = CreateFlags {
            enumerable: rng.below(4) != 0,
            replace: false,
        };
        match rng.below(8) {
            0 | 1 => {
                let _ = with_path(&path, |p| {
                    ns.create(p, NodeType::Directory, Placement::default(), flags, &ctx())
                });
            }
            2 => {
                let _ = with_path(&path, |p| {
                    ns.create(p, NodeType::Table, Placement::default(), flags, &ctx())
                });
            }
            3 => write(
                ns,
                &path,
                NodeType::File,
                rng.below(4 * BLOCK),
                rng.below(2) == 0,
            ),
            4 => write(ns, &path, NodeType::KeyValue, rng.below(3 * BLOCK), false),
            5 => {
                let _ = with_path(&path, |p| ns.delete(p, rng.below(10) == 0, &ctx()));
            }
            6 => {
                let to = path_of(rng);
                let _ = with_path(&path, |from| {
                    with_path(&to, |to| ns.rename(from, to, &ctx()))
                });
            }
            _ => {
                // A write abandoned: created and allocated, never closed.
                if let Ok((info, lease)) = with_path(&path, |p| {
                    ns.create(p, NodeType::File, Placement::default(), flags, &ctx())
                }) {
                    let _ = ns.allocate(info.file_id, lease, 0, 2, &ctx());
                }
            }
        }
    }
}

fn register(ns: &mut Namespace, port: u16) {
    let host = IpAddr::from([127, 0, 0, 2]);
    let spec = DatanodeSpec {
        host,
        address: SocketAddr::new(host, port),
        tier: "dram".into(),
        storage_class: 0,
        capacity: 4096 * BLOCK,
    };
    ns.register_datanode(&spec, &[port as u8; 16], &[], std::time::Instant::now())
        .expect("registering");
}

/// The records of a namespace after every open write is given up (as a restart does).
fn settled(ns: &mut Namespace) -> Vec<pb::JournalRecord> {
    ns.expire(std::time::Instant::now() + std::time::Duration::from_secs(3600));
    dump(ns)
}

fn round_trip(snapshot_every: u64, ops: usize, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), snapshot_every);
    let mut rng = Rng(seed);
    let before = {
        let (mut ns, journal) = open(&config).unwrap();
        register(&mut ns, 7000);
        register(&mut ns, 7001);
        random_ops(&mut ns, &mut rng, ops);
        journal.close();
        settled(&mut ns)
    };
    let (mut ns, journal) = open(&config).unwrap();
    let after = dump(&ns);
    assert!(before.len() > 10, "the random operations built something");
    assert_eq!(before, after, "the namespace came back as it was");
    // And again, after more changes on the restored namespace.
    register(&mut ns, 7000);
    random_ops(&mut ns, &mut rng, ops / 2);
    journal.close();
    let before = settled(&mut ns);
    let (ns, _journal) = open(&config).unwrap();
    assert_eq!(before, dump(&ns), "and again after a second run");
}

#[test]
fn a_restart_rebuilds_the_namespace() {
    for seed in 1..6 {
        round_trip(64 << 20, 400, seed);
    }
}

#[test]
fn snapshots_along_the_way_change_nothing() {
    for seed in 11..14 {
        round_trip(2 << 10, 600, seed);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1 << 10);
    let (mut ns, journal) = open(&config).unwrap();
    register(&mut ns, 7000);
    random_ops(&mut ns, &mut Rng(99), 500);
    journal.close();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("snapshot-")),
        "a snapshot was written: {names:?}"
    );
    let segments = names.iter().filter(|n| n.starts_with("segment-")).count();
    assert!(segments <= 3, "compacted segments were deleted: {names:?}");
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}

#[test]
fn a_torn_tail_is_cut_off_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 64 << 20);
    let before = {
        let (mut ns, journal) = open(&config).unwrap();
        register(&mut ns, 7000);
        random_ops(&mut ns, &mut Rng(5), 300);
        journal.close();
        settled(&mut ns)
    };
    // A crash in the middle of a write: half a record at the end.
    let segment = last_segment(dir.path());
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
    std::fs::write(&segment, &bytes).unwrap();
    let (ns, journal) = open(&config).unwrap();
    assert_eq!(
        before,
        dump(&ns),
        "the torn record is cut off, nothing else"
    );
    journal.close();
    drop(ns);

    // A flipped byte in a segment that is not the last: refused, with the place named.
    let segments: Vec<_> = {
        let mut s: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        s.sort();
        s
    };
    assert!(segments.len() >= 2, "each start begins a segment");
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&segments[0], &bytes).unwrap();
    let error = open(&config).expect_err("a damaged journal is refused");
    let message = error.to_string();
    assert!(
        message.contains("damaged") && message.contains("segment-"),
        "{message}"
    );
}

#[test]
fn one_namenode_per_journal_and_the_block_size_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 64 << 20);
    let (_ns, journal) = open(&config).unwrap();
    let error = open(&config).expect_err("a second namenode is refused");
    assert!(
        error.to_string().contains("in use by another namenode"),
        "{error}"
    );
    journal.close();
    drop(journal);
    drop(_ns);
    let other = NamenodeConfig {
        block_size: ByteSize(2 * BLOCK),
        ..config
    };
    let error = open(&other).expect_err("another block size is refused");
    assert!(error.to_string().contains("block size"), "{error}");
}
