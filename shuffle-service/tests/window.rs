//! A reducer's memory is bounded by its window, not by the segments it reads: one map writes
//! a 2 GiB segment (to a flash tier, whose bytes are not in this process's memory) and a
//! reducer reads it back byte-exact while this process's peak resident memory grows by far
//! less than the segment. Alone in its test binary: the peak is the process's.

#![allow(clippy::unwrap_used)]

use crail_node::{LocalCluster, NodeConfig};
use crail_shuffle::{Commit, GroupRef, Meta, RecordRef, Run, ShuffleId, Shuffles, Slots};
use crail_store::{ByteSize, Config, Store, crc};

const HOST: &str = "127.0.0.2";
const SEGMENT: u64 = 2 << 30;
const WRITE: usize = 4 << 20;

/// This process's resident memory now and at its peak since the last reset, in bytes.
fn rss() -> (u64, u64) {
    crail_node::resident_memory("self").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reducer_reads_a_2_gib_segment_within_its_window() {
    let flash_dir = tempfile::tempdir().unwrap();
    let node = NodeConfig::new(HOST.parse().unwrap(), ByteSize(16 << 20))
        .storage_only()
        .with_flash(ByteSize(SEGMENT + (256 << 20)), flash_dir.path());
    let local = LocalCluster::start_with(&[node], &Config::default())
        .await
        .unwrap();
    let store = Store::connect(&local.on(HOST)).await.unwrap();
    let slots = Slots::new(store.clone(), HOST, 1);
    let shuffles = Shuffles::new(store.clone());
    let id = ShuffleId::new("window", 0);
    shuffles
        .register(&id, &Meta::new(1, 1, "fixed:10:90"))
        .await
        .unwrap();

    // One map, one partition, 2 GiB: each write's bytes differ (their first 8 bytes count).
    let mut block = vec![0u8; WRITE];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for word in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    let mut want = 0u32;
    let mut writer = slots.lease(&id, 0, 0).await.unwrap();
    for i in 0..SEGMENT / WRITE as u64 {
        block[..8].copy_from_slice(&i.to_le_bytes());
        want = crc::combine(want, crc::crc32c(&block), WRITE as u64);
        writer.write(0, &block).await.unwrap();
    }
    let commit = writer.commit().await.unwrap();
    let segment = &commit.segments()[0];
    assert_eq!(segment.len, SEGMENT);
    // In runs of at most a block (1 MiB), each with its crc32c.
    assert!(
        commit.runs(segment).len() as u64 >= SEGMENT >> 20,
        "{} runs",
        commit.runs(segment).len()
    );
    drop(block);

    // The read, with the default prefetch.
    let (before, _) = rss();
    assert!(crail_node::reset_peak_memory());
    let mut reader = shuffles
        .read(&id, 0..1, None, crail_shuffle::DEFAULT_PREFETCH)
        .await
        .unwrap();
    let (mut got, mut sum) = (0u64, 0u32);
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        sum = crc::combine(sum, crc::crc32c(&chunk.data), chunk.data.len() as u64);
        got += chunk.data.len() as u64;
    }
    let (_, peak) = rss();
    assert_eq!(got, SEGMENT);
    assert_eq!(sum, want, "the bytes read are not the bytes written");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "reading a {} segment: resident memory {} before, peak {} (+{})",
        ByteSize(SEGMENT),
        ByteSize(before),
        ByteSize(peak),
        ByteSize(grew)
    );
    assert!(
        grew < SEGMENT / 4,
        "the read grew resident memory by {}",
        ByteSize(grew)
    );

    // A record of the same segment in one run (as another writer might make it) is refused
    // with a typed error, not read into memory.
    let group = GroupRef {
        host: "forged".into(),
        slot: 0,
        copies: 1,
    };
    let first = commit.runs(segment)[0];
    let forged = Commit::new(
        0,
        0,
        group.clone(),
        [(
            0,
            vec![Run {
                offset: first.offset,
                len: SEGMENT as u32,
                crc: want,
            }],
        )],
    )
    .encode();
    let dir = "/crail-shuffle/window/0";
    store
        .write_file(
            &format!("{dir}/g/forged-0"),
            &forged,
            &crail_store::CreateOptions::default(),
        )
        .await
        .unwrap();
    store.delete(&format!("{dir}/maps/0"), true).await.unwrap();
    let at = RecordRef {
        group,
        offset: 0,
        len: forged.len() as u64,
    };
    let dirs = crail_store::CreateOptions::default();
    store
        .create_dir(&format!("{dir}/maps/0"), &dirs)
        .await
        .unwrap();
    store
        .create_dir(&format!("{dir}/maps/0/{}", at.name()), &dirs)
        .await
        .unwrap();
    let fresh = Shuffles::new(store.clone());
    let err = fresh.read(&id, 0..1, None, 4).await.unwrap_err();
    assert!(matches!(err, crail_shuffle::Error::Window { .. }), "{err}");
    assert!(
        err.to_string().contains("more than a reader holds"),
        "{err}"
    );
    shuffles.unregister(&id).await.unwrap();
}
