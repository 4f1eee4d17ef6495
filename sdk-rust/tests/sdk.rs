//! The Rust SDK against three whole nodes (tiers, shuffle and broadcast services, in this
//! process on their own addresses): engines on every node connect through
//! `crail_sdk::Crail`, write map output as records and as serialized bytes, read it back as it
//! comes, sorted, and combined, use broadcast variables and the store, and end the
//! application; bad input gets typed errors.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use crail_node::LocalCluster as Cluster;
use crail_sdk::{Crail, Error};
use crail_store::ByteSize;

const HOSTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

async fn engines(cluster: &Cluster, app: &str) -> Vec<Crail> {
    let mut out = Vec::new();
    for host in HOSTS {
        let crail = Crail::connect(&cluster.on(host), app).await.unwrap();
        assert_eq!(crail.host(), host);
        assert_eq!(crail.app(), app);
        out.push(crail);
    }
    out
}

/// Three nodes of `mib` MiB of dram each.
async fn start(mib: u64) -> Cluster {
    Cluster::with_services(&HOSTS, ByteSize(mib << 20))
        .await
        .unwrap()
}

/// Key `i` of a word-count-like input: 50 distinct keys, some long.
fn word(i: u32) -> Vec<u8> {
    let k = (i * 7919) % 50;
    let mut w = format!("w{k:03}").into_bytes();
    if k.is_multiple_of(10) {
        w.extend(std::iter::repeat_n(b'x', 300));
    }
    w
}

fn u64_of(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_write_and_reducers_read_as_they_come_sorted_and_combined() {
    let cluster = start(256).await;
    let e = engines(&cluster, "sdk-app").await;
    const MAPS: u32 = 6;
    const PARTS: u32 = 4;
    const PER_MAP: u32 = 2000;

    for serializer in ["kv", "kv+lz4"] {
        let number = u32::from(serializer.len() as u8);
        let shuffle = e[0]
            .register_shuffle(number, MAPS, PARTS, serializer)
            .await
            .unwrap();
        // Every map on its own node; the first half of each map's records go one by one, the
        // rest as bytes serialized by the caller.
        let mut expected: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for m in 0..MAPS {
            let engine = e[(m % 3) as usize].shuffle(number).await.unwrap();
            let mut out = engine.map_writer(m, 0).await.unwrap();
            let mut by_partition: Vec<crail_sdk::Encoder> =
                (0..PARTS).map(|_| engine.serializer().encoder()).collect();
            for i in 0..PER_MAP {
                let key = word(m * PER_MAP + i);
                let value = u64::from(m + 1).to_be_bytes();
                *expected.entry(key.clone()).or_default() += u64::from(m + 1);
                let p = u32::from(key[3]) % PARTS;
                if i < PER_MAP / 2 {
                    out.write(p, &key, &value).await.unwrap();
                } else {
                    by_partition[p as usize].push(&key, &value).unwrap();
                }
            }
            for (p, encoder) in by_partition.iter_mut().enumerate() {
                let bytes = encoder.finish().unwrap();
                out.write_serialized(p as u32, &bytes).await.unwrap();
            }
            let status = out.commit().await.unwrap();
            assert_eq!((status.map, status.attempt), (m, 0));
            assert_eq!(status.bytes.len(), PARTS as usize);
            assert!(status.bytes.iter().all(|b| *b > 0), "{:?}", status.bytes);
        }
        let statuses = shuffle.map_statuses().await.unwrap();
        assert_eq!(statuses.len(), MAPS as usize);

        // As they come: every record once, in its partition.
        let mut seen = 0u64;
        for p in 0..PARTS {
            let mut records = e[(p % 3) as usize]
                .shuffle(number)
                .await
                .unwrap()
                .reader(p..p + 1)
                .open()
                .await
                .unwrap();
            while let Some(r) = records.next_record().await.unwrap() {
                assert_eq!(u32::from(r.key[3]) % PARTS, p);
                seen += 1;
            }
        }
        assert_eq!(seen, u64::from(MAPS * PER_MAP));

        // Sorted: every partition in key order; records of equal keys all there.
        for sorter in ["radix", "comparison"] {
            let mut records = shuffle
                .reader(0..PARTS)
                .sorted(sorter)
                .open()
                .await
                .unwrap();
            let (mut last, mut count) = (Vec::new(), 0u32);
            while let Some(r) = records.next_record().await.unwrap() {
                assert!(last.as_slice() <= r.key, "{sorter}: out of order");
                last = r.key.to_vec();
                count += 1;
            }
            assert_eq!(count, MAPS * PER_MAP, "{sorter}");
        }

        // Combined: one record per key, the values summed; narrowed to some maps.
        let sum = |_: &[u8], acc: &mut Vec<u8>, v: &[u8]| {
            let total = u64_of(acc) + u64_of(v);
            acc.clear();
            acc.extend_from_slice(&total.to_be_bytes());
        };
        let mut records = shuffle.reader(0..PARTS).combine(sum).open().await.unwrap();
        let mut got = BTreeMap::new();
        while let Some(r) = records.next_record().await.unwrap() {
            assert!(
                got.insert(r.key.to_vec(), u64_of(r.value)).is_none(),
                "a key twice"
            );
        }
        assert_eq!(got, expected);
        let mut records = shuffle
            .reader(0..PARTS)
            .maps(0..1)
            .combine(sum)
            .open()
            .await
            .unwrap();
        let mut total = 0;
        while let Some(r) = records.next_record().await.unwrap() {
            total += u64_of(r.value);
        }
        assert_eq!(total, u64::from(PER_MAP), "map 0 wrote value 1 per record");
        e[1].unregister_shuffle(number).await.unwrap();
    }

    // Broadcast variables and the store, through the same handle.
    e[0].put_broadcast("lookup", &[7u8; 3 << 20]).await.unwrap();
    for engine in &e {
        assert_eq!(
            engine.read_broadcast("lookup").await.unwrap(),
            vec![7u8; 3 << 20]
        );
    }
    e[2].destroy_broadcast("lookup").await.unwrap();
    assert!(matches!(
        e[0].read_broadcast("lookup").await,
        Err(Error::Broadcast(
            crail_broadcast::Error::UnknownVariable { .. }
        ))
    ));
    e[0].put_broadcast("kept-until-the-end", b"v")
        .await
        .unwrap();
    let shuffle = e[0].register_shuffle(9, 1, 1, "kv").await.unwrap();
    let mut out = shuffle.map_writer(0, 0).await.unwrap();
    out.write(0, b"k", b"v").await.unwrap();
    out.commit().await.unwrap();
    let listing = e[1].store().list("/").await.unwrap();
    assert!(!listing.is_empty());

    // The application ends: its shuffles and variables are gone.
    e[1].end_application().await.unwrap();
    assert!(matches!(
        e[2].shuffle(9).await,
        Err(Error::Shuffle(crail_shuffle::Error::UnknownShuffle { .. }))
    ));
    assert!(matches!(
        e[2].read_broadcast("kept-until-the-end").await,
        Err(Error::Broadcast(
            crail_broadcast::Error::UnknownVariable { .. }
        ))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors() {
    let cluster = start(128).await;
    let e = engines(&cluster, "sdk-bad").await;
    assert!(matches!(
        e[0].register_shuffle(1, 2, 2, "no-such-format").await,
        Err(Error::Records(_))
    ));
    assert!(matches!(
        e[0].shuffle(1).await,
        Err(Error::Shuffle(crail_shuffle::Error::UnknownShuffle { .. }))
    ));
    let shuffle = e[0].register_shuffle(1, 2, 2, "fixed:4:4").await.unwrap();
    assert!(matches!(
        e[1].register_shuffle(1, 2, 2, "kv").await,
        Err(Error::Shuffle(
            crail_shuffle::Error::AlreadyRegistered { .. }
        ))
    ));
    let mut out = shuffle.map_writer(0, 0).await.unwrap();
    let past = out.write(2, b"abcd", b"efgh").await.unwrap_err();
    assert!(
        matches!(
            past,
            Error::Shuffle(crail_shuffle::Error::PartitionOutOfRange { partition: 2, .. })
        ),
        "{past}"
    );
    assert!(matches!(
        out.write(0, b"too long", b"efgh").await,
        Err(Error::Records(_))
    ));
    out.write(0, b"abcd", b"efgh").await.unwrap();
    out.set_checksum(77);
    out.commit().await.unwrap();
    // A second attempt of the same map does not count; the map's status is the first's, with
    // the checksum it kept.
    let mut again = shuffle.map_writer(0, 1).await.unwrap();
    again.write(1, b"zzzz", b"zzzz").await.unwrap();
    again.set_checksum(78);
    assert!(matches!(
        again.commit().await,
        Err(Error::Shuffle(
            crail_shuffle::Error::AlreadyCommitted { .. }
        ))
    ));
    let status = shuffle.map_status(0).await.unwrap();
    assert_eq!((status.attempt, status.checksum), (0, 77));
    assert_eq!(status.bytes.iter().sum::<u64>(), 8);
    assert!(matches!(
        shuffle.map_status(1).await,
        Err(Error::Shuffle(crail_shuffle::Error::NotCommitted { .. }))
    ));
    // Bytes that are not whole records of the format fail the reader, typed.
    let mut torn = shuffle.map_writer(1, 0).await.unwrap();
    torn.write_serialized(1, b"abc").await.unwrap();
    torn.commit().await.unwrap();
    let mut records = shuffle.reader(1..2).open().await.unwrap();
    assert!(matches!(
        records.next_record().await,
        Err(Error::Records(_))
    ));
    assert!(matches!(
        shuffle.reader(0..2).sorted("no-such-sorter").open().await,
        Err(Error::Records(_))
    ));
    assert!(matches!(
        shuffle.reader(0..2).sorted("radix").open().await,
        Err(Error::Records(_))
    ));
    assert!(matches!(
        e[0].put_broadcast("../escape", b"x").await,
        Err(Error::Broadcast(crail_broadcast::Error::Invalid { .. }))
    ));
    e[0].end_application().await.unwrap();
}

/// Fixed-length records in segments of several store buffers: the reader hands each segment
/// out in buffer-sized pieces that split records, and a sorted read joins them again; the
/// result equals a sort of everything written, record for record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorted_reads_of_segments_larger_than_a_buffer_join_split_records() {
    let cluster = start(256).await;
    let e = engines(&cluster, "sdk-split").await;
    let shuffle = e[0].register_shuffle(3, 3, 1, "fixed:10:90").await.unwrap();
    let mut written = Vec::new();
    for m in 0..3u32 {
        // 3.5 MB per map: four pieces of 1 MiB, three of them ending inside a record.
        let mut bytes = Vec::new();
        for i in 0..35_000u32 {
            let mut record = [0u8; 100];
            let x = (u64::from(m) << 32 | u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            record[..8].copy_from_slice(&x.to_be_bytes());
            record[10..14].copy_from_slice(&i.to_be_bytes());
            record[14] = m as u8;
            bytes.extend_from_slice(&record);
        }
        let mut out = shuffle.map_writer(m, 0).await.unwrap();
        out.write_serialized(0, &bytes).await.unwrap();
        out.commit().await.unwrap();
        written.extend(bytes.chunks(100).map(<[u8]>::to_vec));
    }
    written.sort_by(|a, b| a[..10].cmp(&b[..10]));
    let (mut sorted, mut scratch) = (vec![7u8; 5], Vec::new());
    e[1].shuffle(3)
        .await
        .unwrap()
        .reader(0..1)
        .sorted("radix")
        .read_sorted_into(&mut sorted, &mut scratch)
        .await
        .unwrap();
    assert_eq!(sorted.len(), written.len() * 100);
    assert!(sorted.chunks(100).zip(&written).all(|(a, b)| a == &b[..]));
    // Into memory the caller manages: the same records at its start, or a typed error
    // naming the size needed when it is short.
    let need = written.len() * 100;
    let reader = e[2].shuffle(3).await.unwrap();
    let (mut out, mut scratch) = (vec![7u8; need + 4096], vec![0u8; need]);
    let len = reader
        .reader(0..1)
        .read_sorted_to(&mut out, &mut scratch)
        .await
        .unwrap();
    assert_eq!(len, need);
    assert!(
        out[..len] == sorted[..],
        "the same bytes as read_sorted_into"
    );
    let short = reader
        .reader(0..1)
        .read_sorted_to(&mut out[..need - 100], &mut scratch)
        .await
        .unwrap_err();
    assert!(
        short
            .to_string()
            .contains(&format!("does not fit the {need} bytes")),
        "{short}"
    );
    e[0].end_application().await.unwrap();
}
