//! Shuffles through a real store: a namenode and three dram datanodes in this process, each on
//! its own 127.0.0.x address, and per "node" a `Slots` whose client lives on that address.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use crail_node::LocalCluster;
use crail_shuffle::{Error, Meta, ShuffleId, Shuffles, Slots};
use crail_store::{ByteSize, Store};

const HOSTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
const SLOTS: usize = 2;
const RECORD: usize = 100;

struct Cluster {
    _store: LocalCluster,
    store: Store,
    nodes: Vec<Slots>,
}

async fn cluster() -> Cluster {
    let local = LocalCluster::start(&HOSTS, ByteSize(256 << 20))
        .await
        .unwrap();
    let mut nodes = Vec::new();
    for host in HOSTS {
        let store = Store::connect(&local.on(host)).await.unwrap();
        nodes.push(Slots::new(store, host, SLOTS));
    }
    let store = Store::connect(&local.client).await.unwrap();
    Cluster {
        _store: local,
        store,
        nodes,
    }
}

fn meta(maps: u32, partitions: u32) -> Meta {
    Meta::new(maps, partitions, "fixed:10:90")
}

/// Map `map`'s records: `count` TeraSort-shaped records whose key starts with the map and
/// record number, partitioned by key.
fn records(map: u32, count: u32, partitions: u32) -> HashMap<u32, Vec<u8>> {
    let mut out: HashMap<u32, Vec<u8>> = HashMap::new();
    for i in 0..count {
        let mut r = [0u8; RECORD];
        let x = (u64::from(map) << 32 | u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        r[..8].copy_from_slice(&x.to_be_bytes());
        r[8..12].copy_from_slice(&map.to_be_bytes());
        r[12..16].copy_from_slice(&i.to_be_bytes());
        let partition = (x >> 40) as u32 % partitions;
        out.entry(partition).or_default().extend_from_slice(&r);
    }
    out
}

async fn run_map(slots: &Slots, id: &ShuffleId, map: u32, attempt: u64, partitions: u32) {
    let writer = slots.lease(id, map, attempt).await.unwrap();
    write_and_commit(writer, map, partitions).await.unwrap();
}

/// Writes the records of `source` (see [`records`]) and commits.
async fn write_and_commit(
    mut writer: crail_shuffle::MapWriter,
    source: u32,
    partitions: u32,
) -> Result<crail_shuffle::Commit, Error> {
    let mut parts: Vec<_> = records(source, 500 + source * 7, partitions)
        .into_iter()
        .collect();
    parts.sort_by_key(|(p, _)| *p);
    for (partition, bytes) in parts {
        // In two writes, as an engine's buffers would come.
        let half = bytes.len() / RECORD / 2 * RECORD;
        writer.write(partition, &bytes[..half]).await?;
        writer.write(partition, &bytes[half..]).await?;
    }
    writer.commit().await
}

fn split(bytes: &[u8]) -> impl Iterator<Item = [u8; RECORD]> + '_ {
    bytes
        .chunks(RECORD)
        .map(|r| <[u8; RECORD]>::try_from(r).unwrap())
}

/// Every record of partitions `parts` from maps `maps`, sorted.
async fn read_sorted(
    shuffles: &Shuffles,
    id: &ShuffleId,
    parts: std::ops::Range<u32>,
    maps: Option<std::ops::Range<u32>>,
) -> Vec<[u8; RECORD]> {
    let reader = shuffles.read(id, parts.clone(), maps, 4).await.unwrap();
    records_of(reader, parts).await
}

/// Every record a read hands out, sorted.
async fn records_of(
    mut reader: crail_shuffle::PartitionReader,
    parts: std::ops::Range<u32>,
) -> Vec<[u8; RECORD]> {
    // A chunk may end inside a record: each (partition, map)'s chunks, joined in order.
    let mut segments: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        assert!(parts.contains(&chunk.partition));
        segments
            .entry((chunk.partition, chunk.map))
            .or_default()
            .extend_from_slice(&chunk.data);
    }
    let mut out = Vec::new();
    for bytes in segments.values() {
        assert_eq!(bytes.len() % RECORD, 0);
        out.extend(split(bytes));
    }
    out.sort_unstable();
    out
}

fn expected(
    maps: std::ops::Range<u32>,
    parts: std::ops::Range<u32>,
    partitions: u32,
) -> Vec<[u8; RECORD]> {
    let mut out = Vec::new();
    for map in maps {
        for (p, bytes) in records(map, 500 + map * 7, partitions) {
            if parts.contains(&p) {
                out.extend(split(&bytes));
            }
        }
    }
    out.sort_unstable();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_maps_and_reducers_read_exactly_what_was_written_from_few_files() {
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let id = ShuffleId::new("app-1", 0);
    let (maps, partitions) = (24u32, 8u32);
    shuffles
        .register(&id, &meta(maps, partitions))
        .await
        .unwrap();

    // Maps run on every node, several at once per node (more than its slots).
    let mut tasks = Vec::new();
    for map in 0..maps {
        let slots = c.nodes[map as usize % HOSTS.len()].clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            run_map(&slots, &id, map, 1, partitions).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // Every reducer gets its partition's records, no more, no fewer.
    let mut all = Vec::new();
    for p in 0..partitions {
        let got = read_sorted(&shuffles, &id, p..p + 1, None).await;
        assert!(
            got == expected(0..maps, p..p + 1, partitions),
            "partition {p}"
        );
        all.extend(got);
    }
    all.sort_unstable();
    assert!(all == expected(0..maps, 0..partitions, partitions));

    // nodes x slots files, not maps x partitions, each on its writer's node.
    let mut files = 0;
    for entry in c.store.list("/crail-shuffle/app-1/0/g").await.unwrap() {
        files += 1;
        let host = entry.name.split('-').next().unwrap().to_owned();
        let path = format!("/crail-shuffle/app-1/0/g/{}", entry.name);
        let file = c.store.lookup(&path).await.unwrap().into_file().unwrap();
        for block in file.all_block_locations().await.unwrap() {
            assert_eq!(block.host.to_string(), host, "{path}");
        }
    }
    assert_eq!(files, HOSTS.len() * SLOTS);

    // Map status: bytes per partition of every map, as written.
    let statuses = shuffles.map_statuses(&id, None).await.unwrap();
    assert_eq!(statuses.len(), maps as usize);
    for (map, lengths) in statuses {
        let written = records(map, 500 + map * 7, partitions);
        for (p, len) in lengths.iter().enumerate() {
            let want = written.get(&(p as u32)).map_or(0, Vec::len) as u64;
            assert_eq!(*len, want, "map {map} partition {p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_retried_and_speculative_attempts_are_read_once() {
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let id = ShuffleId::new("app-2", 3);
    let (maps, partitions) = (4u32, 3u32);
    shuffles
        .register(&id, &meta(maps, partitions))
        .await
        .unwrap();

    // Attempt 1 of map 0 writes garbage and fails (dropped); attempt 2 on the same slots
    // writes over it and commits.
    {
        let mut w = c.nodes[0].lease(&id, 0, 1).await.unwrap();
        for p in 0..partitions {
            w.write(p, &[0xee; RECORD * 3]).await.unwrap();
        }
    }
    run_map(&c.nodes[0], &id, 0, 2, partitions).await;
    // A speculative attempt 3 on another node finishes later: refused, never read.
    let mut late = c.nodes[1].lease(&id, 0, 3).await.unwrap();
    for (p, bytes) in records(0, 500, partitions) {
        late.write(p, &bytes).await.unwrap();
    }
    let err = late.commit().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::AlreadyCommitted {
                map: 0,
                attempt: 3,
                winner: 2,
                ..
            }
        ),
        "{err}"
    );
    // An explicit abort too.
    let mut aborted = c.nodes[2].lease(&id, 1, 1).await.unwrap();
    aborted.write(0, &[0xdd; RECORD]).await.unwrap();
    aborted.abort().await;

    // Not every map has committed yet: a read names the missing ones.
    let err = shuffles
        .read(&id, 0..partitions, None, 4)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotCommitted { maps, .. } if maps == &[1, 2, 3]),
        "{err}"
    );
    for map in 1..maps {
        run_map(&c.nodes[map as usize % 3], &id, map, 7, partitions).await;
    }
    let got = read_sorted(&shuffles, &id, 0..partitions, None).await;
    assert!(got == expected(0..maps, 0..partitions, partitions));
    let commits = shuffles.commits(&id, None).await.unwrap();
    assert_eq!(commits[0].attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_the_whole_stage_replaces_the_earlier_run_and_readers_see_one_run() {
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let id = ShuffleId::new("app-rerun", 1);
    let (maps, partitions) = (4u32, 3u32);
    shuffles
        .register(&id, &meta(maps, partitions))
        .await
        .unwrap();
    let lease = |map: u32, attempt: u64, generation: u32| {
        let slots = &c.nodes[map as usize % 3];
        let id = &id;
        async move {
            slots
                .lease(id, map, attempt)
                .await
                .unwrap()
                .generation(generation)
        }
    };
    // The first run: map m as attempt 10 + m, each writing the records of source m.
    for map in 0..maps {
        write_and_commit(lease(map, u64::from(10 + map), 0).await, map, partitions)
            .await
            .unwrap();
    }
    let first: Vec<(u32, u64)> = (0..maps).map(|m| (m, u64::from(10 + m))).collect();
    let read = |attempts: Vec<(u32, u64)>| {
        let shuffles = &shuffles;
        let id = &id;
        async move {
            shuffles
                .read_attempts(id, 0..partitions, &attempts, 4)
                .await
        }
    };
    let got = records_of(read(first.clone()).await.unwrap(), 0..partitions).await;
    assert!(got == expected(0..maps, 0..partitions, partitions));

    // The stage runs again whole (generation 1), its maps writing other records (source
    // 100 + m). A late task of the first run that commits before the rerun's attempt of its
    // map is refused as any second attempt is.
    let late = write_and_commit(lease(2, 90, 0).await, 2, partitions).await;
    assert!(
        matches!(
            late,
            Err(Error::AlreadyCommitted {
                map: 2,
                winner: 12,
                ..
            })
        ),
        "{late:?}"
    );
    let rerun = write_and_commit(lease(0, 20, 1).await, 100, partitions)
        .await
        .unwrap();
    assert_eq!((rerun.attempt, rerun.generation), (20, 1));
    // A reader of the first run no longer gets it whole: it fails, naming the map that ran
    // again, rather than mixing the two runs.
    let err = read(first.clone()).await.unwrap_err();
    assert!(
        matches!(&err, Error::FetchFailed { maps, .. } if maps == &[0]),
        "{err}"
    );
    assert!(err.to_string().contains("attempt 20"), "{err}");
    for map in 1..maps {
        write_and_commit(
            lease(map, u64::from(20 + map), 1).await,
            100 + map,
            partitions,
        )
        .await
        .unwrap();
    }
    // A late task of the first run cannot commit over the rerun's output.
    let late = write_and_commit(lease(1, 91, 0).await, 1, partitions).await;
    assert!(
        matches!(
            late,
            Err(Error::Superseded {
                map: 1,
                attempt: 91,
                generation: 0,
                committed: 1,
                ..
            })
        ),
        "{late:?}"
    );
    let second: Vec<(u32, u64)> = (0..maps).map(|m| (m, u64::from(20 + m))).collect();
    let got = records_of(read(second.clone()).await.unwrap(), 0..partitions).await;
    assert!(got == expected(100..100 + maps, 0..partitions, partitions));
    // Maps a scheduler knows to have nothing for the read are left out, and not read.
    let got = records_of(read(second[..2].to_vec()).await.unwrap(), 0..partitions).await;
    assert!(got == expected(100..102, 0..partitions, partitions));
    // Bad lists are typed errors.
    let err = read(vec![(1, 21), (1, 22)]).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let err = read(vec![(maps, 1)]).await.unwrap_err();
    assert!(matches!(err, Error::MapOutOfRange { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reducers_read_partition_and_map_ranges() {
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let id = ShuffleId::new("app-3", 1);
    let (maps, partitions) = (12u32, 6u32);
    shuffles
        .register(&id, &meta(maps, partitions))
        .await
        .unwrap();
    for map in 0..maps {
        run_map(&c.nodes[map as usize % 3], &id, map, 0, partitions).await;
    }
    // As Spark AQE asks: coalesced partitions, and a skewed partition split by maps.
    for (parts, maps_range) in [
        (2..5, Some(4..10)),
        (0..6, Some(0..1)),
        (5..6, None),
        (3..3, None),
    ] {
        let got = read_sorted(&shuffles, &id, parts.clone(), maps_range.clone()).await;
        let want = expected(
            maps_range.clone().unwrap_or(0..maps),
            parts.clone(),
            partitions,
        );
        assert!(got == want, "{parts:?} {maps_range:?}");
    }
    let err = shuffles.read(&id, 0..7, None, 4).await.unwrap_err();
    assert!(
        matches!(err, Error::PartitionOutOfRange { partition: 6, .. }),
        "{err}"
    );
    let err = shuffles.read(&id, 0..1, Some(3..13), 4).await.unwrap_err();
    assert!(matches!(err, Error::MapOutOfRange { map: 12, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_and_unregister_cleans_up() {
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let id = ShuffleId::new("app-4", 0);
    let unknown = ShuffleId::new("app-4", 9);

    let err = shuffles
        .register(&ShuffleId::new("../x", 0), &meta(1, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    let bad = Meta {
        serializer: "yaml".into(),
        ..meta(1, 1)
    };
    let err = shuffles.register(&id, &bad).await.unwrap_err();
    assert!(err.to_string().contains("yaml"), "{err}");
    let err = shuffles.register(&id, &meta(0, 1)).await.unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");

    shuffles.register(&id, &meta(2, 2)).await.unwrap();
    let err = shuffles.register(&id, &meta(2, 2)).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyRegistered { .. }), "{err}");
    for err in [
        shuffles.read(&unknown, 0..1, None, 1).await.unwrap_err(),
        c.nodes[0].lease(&unknown, 0, 0).await.unwrap_err(),
        shuffles.unregister(&unknown).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::UnknownShuffle { .. }), "{err}");
        assert_eq!(err.to_string(), "shuffle app-4/9 is not registered");
    }
    // Places asked for a loan nobody holds, past the partitions, or of more than a node
    // places at once: typed refusals, nothing placed.
    let (lent, _) = c.nodes[0].lend(&id, 0).await.unwrap();
    for (lease, wants, record) in [
        (lent.lease + 1000, vec![(0, 10)], 0),
        (lent.lease, vec![(2, 10)], 0),
        (lent.lease, vec![(0, 1 << 29), (1, 1 << 29)], 1),
        (lent.lease, vec![(0, u64::MAX), (1, 2)], 0),
    ] {
        let err = c.nodes[0].place(lease, &wants, record).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid { .. } | Error::PartitionOutOfRange { partition: 2, .. }
            ),
            "{err}"
        );
    }
    let placed = c.nodes[0].place(lent.lease, &[(1, 10)], 5).await.unwrap();
    assert_eq!(placed.runs, vec![(1, 0, 10)]);
    assert!(placed.record >= 10 && placed.size >= placed.record + 5);
    c.nodes[0].give_back(lent.lease, crail_shuffle::Outcome::Aborted);
    let err = c.nodes[0].lease(&id, 2, 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::MapOutOfRange {
                map: 2,
                maps: 2,
                ..
            }
        ),
        "{err}"
    );
    let mut w = c.nodes[0].lease(&id, 0, 0).await.unwrap();
    let err = w.write(2, &[0; RECORD]).await.unwrap_err();
    assert!(
        matches!(err, Error::PartitionOutOfRange { partition: 2, .. }),
        "{err}"
    );
    w.write(1, &[1; RECORD]).await.unwrap();
    w.commit().await.unwrap();

    // A second shuffle of the app, then unregister of one and the end of the app.
    let other = ShuffleId::new("app-4", 1);
    shuffles.register(&other, &meta(1, 1)).await.unwrap();
    run_map(&c.nodes[1], &other, 0, 0, 1).await;
    let used = |store: Store| async move {
        let info = store.cluster_info().await.unwrap();
        info.datanodes.iter().map(|d| d.used).sum::<u64>()
    };
    let before = used(c.store.clone()).await;
    shuffles.unregister(&id).await.unwrap();
    c.nodes[0].forget(&id);
    assert!(used(c.store.clone()).await < before);
    let err = shuffles.map_statuses(&id, None).await.unwrap_err();
    assert!(matches!(err, Error::UnknownShuffle { .. }), "{err}");
    assert_eq!(shuffles.map_statuses(&other, None).await.unwrap().len(), 1);
    shuffles.remove_app("app-4").await.unwrap();
    c.nodes[1].forget(&other);
    assert_eq!(used(c.store.clone()).await, 0);
    assert!(c.store.list("/crail-shuffle").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_one_by_one_across_many_partitions_all_arrive_in_place() {
    // More partitions than a task keeps bytes buffered for, written a record at a time in
    // key order (as an unsorted engine would): partitions are sent early, then buffered again.
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let id = ShuffleId::new("interleaved", 0);
    let (maps, partitions) = (3u32, 40u32);
    shuffles
        .register(&id, &meta(maps, partitions))
        .await
        .unwrap();
    for map in 0..maps {
        let mut writer = c.nodes[map as usize].lease(&id, map, 0).await.unwrap();
        let parts = records(map, 500 + map * 7, partitions);
        let mut at: HashMap<u32, usize> = HashMap::new();
        let mut order: Vec<(u64, u32)> = parts
            .iter()
            .flat_map(|(&p, bytes)| {
                split(bytes)
                    .map(move |r| (u64::from_be_bytes(r[..8].try_into().unwrap()), p))
                    .collect::<Vec<_>>()
            })
            .collect();
        order.sort_unstable_by_key(|&(key, p)| (key.rotate_left(17), p));
        for (_, p) in order {
            let i = at.entry(p).or_default();
            writer.write(p, &parts[&p][*i..*i + RECORD]).await.unwrap();
            *i += RECORD;
        }
        writer.commit().await.unwrap();
    }
    for p in 0..partitions {
        let got = read_sorted(&shuffles, &id, p..p + 1, None).await;
        assert!(
            got == expected(0..maps, p..p + 1, partitions),
            "partition {p}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_writing_to_group_files_hold_their_bytes_and_little_more() {
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let id = ShuffleId::new("app-blocks", 0);
    const MAPS: u32 = 24;
    const PARTITIONS: u32 = 40;
    shuffles
        .register(&id, &meta(MAPS, PARTITIONS))
        .await
        .unwrap();
    // One node: every map writes 1.5 MiB to partition 0 and a little to each other one.
    let segment = vec![7u8; 15 * 1024 * RECORD];
    let small = vec![9u8; 3 * RECORD];
    for m in 0..MAPS {
        let mut writer = c.nodes[0].lease(&id, m, 0).await.unwrap();
        writer.write(0, &segment).await.unwrap();
        for p in 1..PARTITIONS {
            writer.write(p, &small).await.unwrap();
        }
        writer.commit().await.unwrap();
    }
    let block = 1u64 << 20;
    let written =
        u64::from(MAPS) * (segment.len() + small.len() * (PARTITIONS as usize - 1)) as u64;
    let (mut files, mut held) = (0u64, 0u64);
    for entry in c.store.list("/crail-shuffle/app-blocks/0/g").await.unwrap() {
        files += 1;
        held += entry.stat.block_count * block;
        assert_eq!(
            entry.stat.size,
            entry.stat.block_count * block,
            "{}",
            entry.name
        );
    }
    // The bytes, their records, and per file at most one open extent per partition (small
    // ones but partition 0's) and the last block's rest.
    let spare = files * (block + u64::from(PARTITIONS) * 16 * 1024 + 2 * block);
    assert!(
        files > 0 && held <= written + spare,
        "{held} bytes held in {files} files for {written} written"
    );
    shuffles.unregister(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_whose_bytes_changed_after_commit_fails_its_checksum_unless_a_copy_holds() {
    let c = cluster().await;
    let shuffles = Shuffles::new(c.store.clone());
    let single = ShuffleId::new("app-crc", 0);
    let replicated = ShuffleId::new("app-crc", 1);
    shuffles.register(&single, &meta(2, 1)).await.unwrap();
    shuffles
        .register(&replicated, &meta(2, 1).replication(2))
        .await
        .unwrap();
    for id in [&single, &replicated] {
        run_map(&c.nodes[0], id, 0, 0, 1).await;
        run_map(&c.nodes[1], id, 1, 0, 1).await;
        c.nodes[0].forget(id);
        c.nodes[1].forget(id);
        // Map 0's group file (its first copy) replaced by one of the same length with one
        // byte changed: stale or misplaced bytes that the store's own checksums accept (the
        // new file was written whole), which only the segment's checksum can tell.
        let dir = format!("/crail-shuffle/app-crc/{}/g", id.shuffle);
        let names: Vec<String> = c
            .store
            .list(&dir)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n.starts_with(HOSTS[0]) && !n.contains(".r"))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let path = format!("{dir}/{}", names[0]);
        let file = c.store.lookup(&path).await.unwrap().into_file().unwrap();
        let mut bytes = readable_bytes(&file).await;
        assert!(bytes.len() >= 500 * RECORD);
        bytes[RECORD * 7 + 3] ^= 0x20;
        c.store.delete(&path, false).await.unwrap();
        c.store
            .write_file(&path, &bytes, &Default::default())
            .await
            .unwrap();
    }

    let err = shuffles.read(&single, 0..1, None, 4).await.unwrap();
    let err = drain(err).await.unwrap_err();
    match &err {
        Error::FetchFailed { maps, cause, .. } => {
            assert_eq!(maps, &[0], "{err}");
            assert!(cause.contains("fails its checksum"), "{err}");
        }
        other => panic!("expected a fetch failure, got {other}"),
    }
    // The intact map still reads; the replicated shuffle reads map 0 from its second copy.
    assert_eq!(
        read_sorted(&shuffles, &single, 0..1, Some(1..2)).await,
        expected(1..2, 0..1, 1)
    );
    assert_eq!(
        read_sorted(&shuffles, &replicated, 0..1, None).await,
        expected(0..2, 0..1, 1)
    );
}

/// Reads a partition reader to its end, or to its first error.
async fn drain(mut reader: crail_shuffle::PartitionReader) -> Result<usize, Error> {
    let mut bytes = 0;
    while let Some(chunk) = reader.next_chunk().await? {
        bytes += chunk.data.len();
    }
    Ok(bytes)
}

/// A file's bytes, its never-written ranges (between a group file's extents) as zeros: the
/// store refuses to read those rather than return whatever the block held before.
async fn readable_bytes(file: &crail_store::File) -> Vec<u8> {
    const PAGE: u64 = 4096;
    let mut reader = file.reader();
    let size = file.size();
    let mut out = Vec::with_capacity(size as usize);
    let mut at = 0;
    while at < size {
        let len = PAGE.min(size - at) as usize;
        match reader.read_at(at, len).await {
            Ok(buf) => out.extend_from_slice(&buf),
            Err(crail_store::Error::Unwritten { .. }) => out.resize(out.len() + len, 0),
            Err(e) => panic!("{e}"),
        }
        at += len as u64;
    }
    out
}
