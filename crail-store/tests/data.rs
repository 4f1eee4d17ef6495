//! The data plane end to end: datanodes on their own 127.0.0.x hosts, each on its own
//! runtime (its own threads, killed as a process would be), a namenode, and the client
//! streams.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crail_store::namenode::RunningNamenode;
use crail_store::testing;
use crail_store::{
    ByteSize, ClientConfig, CreateOptions, DatanodeConfig, Error, Placement, Store, TierKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1 << 20;

/// A datanode on its own runtime, as if in a process of its own: [`Datanode::kill`] (or a
/// drop) drops the runtime, which closes its sockets at once and stops its heartbeats,
/// without deregistering.
struct Datanode {
    /// Dropping it tells the datanode's thread to drop its runtime.
    kill: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: String,
    id: u64,
}

impl Datanode {
    fn start(
        nn: &RunningNamenode,
        host: &str,
        tier: TierKind,
        capacity: u64,
        path: Option<&std::path::Path>,
    ) -> Self {
        let config = DatanodeConfig {
            listen: format!("{host}:0").parse().unwrap(),
            tier,
            capacity: ByteSize(capacity),
            path: path.map(std::path::Path::to_owned),
            ..DatanodeConfig::default()
        };
        let client = common::client_config(nn);
        let (started, info) = std::sync::mpsc::channel();
        let (kill, killed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let datanode = runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
                crail_store::datanode::Datanode::start(listener, config, client)
                    .await
                    .unwrap()
            });
            let info = datanode.info();
            started.send((info.address.to_string(), info.id.0)).unwrap();
            runtime.spawn(datanode.serve(std::future::pending()));
            let _ = killed.recv();
            runtime.shutdown_background();
        });
        let (addr, id) = info.recv().unwrap();
        Self {
            kill: Some(kill),
            thread: Some(thread),
            addr,
            id,
        }
    }

    fn dram(nn: &RunningNamenode, host: &str, mib: u64) -> Self {
        Self::start(nn, host, TierKind::Dram, mib << 20, None)
    }

    fn flash(nn: &RunningNamenode, host: &str, mib: u64, path: &std::path::Path) -> Self {
        Self::start(nn, host, TierKind::Flash, mib << 20, Some(path))
    }

    fn kill(&mut self) {
        drop(self.kill.take());
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Datanode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Deterministic bytes that differ at every offset of interest.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn write(store: &Store, path: &str, data: &[u8]) {
    store
        .write_file(path, data, &CreateOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_spans_blocks_and_both_tiers_and_reads_back() {
    let nn = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _dram = Datanode::dram(&nn, "127.0.0.2", 8);
    let _flash = Datanode::flash(&nn, "127.0.0.3", 64, &dir.path().join("flash.img"));
    let store = common::client_on(&nn, "127.0.0.2").await;

    // 8 MiB of DRAM fills first, then flash takes the rest: one file on both tiers.
    let data = pattern(20 * MIB + 12_345, 1);
    write(&store, "/big", &data).await;
    let file = store.lookup("/big").await.unwrap().into_file().unwrap();
    assert_eq!(file.size(), data.len() as u64);
    let classes: Vec<u32> = file
        .all_block_locations()
        .await
        .unwrap()
        .iter()
        .map(|b| b.storage_class)
        .collect();
    assert_eq!(
        classes.iter().filter(|c| **c == 0).count(),
        8,
        "{classes:?}"
    );
    assert_eq!(
        classes.iter().filter(|c| **c == 1).count(),
        13,
        "{classes:?}"
    );
    assert!(file.read_to_end().await.unwrap() == data, "bytes differ");

    // Random reads anywhere, across block and tier boundaries, checked against the source.
    let mut reader = file.reader();
    for (i, &(offset, len)) in [
        (0usize, 1usize),
        (4095, 2),
        (MIB - 100, 200),
        (8 * MIB - 10, 20),
        (3 * MIB + 7, 3 * MIB),
        (data.len() - 5, 100),
    ]
    .iter()
    .enumerate()
    {
        let got = reader.read_at(offset as u64, len).await.unwrap();
        let end = (offset + len).min(data.len());
        assert!(*got == data[offset..end], "read {i} at {offset}+{len}");
    }
    for i in 0..200u64 {
        let offset = (i * 104_729) as usize % data.len();
        let got = reader.read_at(offset as u64, 4096).await.unwrap();
        let end = (offset + 4096).min(data.len());
        assert!(*got == data[offset..end], "random read at {offset}");
    }
    // At the end: empty; past it: a typed error.
    assert!(
        reader
            .read_at(data.len() as u64, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let err = reader.read_at(data.len() as u64 + 1, 10).await.unwrap_err();
    assert!(matches!(err, Error::PastEndOfFile { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_overwrite_at_unaligned_offsets_on_both_tiers() {
    let nn = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _dram = Datanode::dram(&nn, "127.0.0.2", 16);
    let _flash = Datanode::flash(&nn, "127.0.0.3", 16, &dir.path().join("flash.img"));
    let store = common::client(&nn).await;
    for (class, path) in [(0, "/on-dram"), (1, "/on-flash")] {
        let options = CreateOptions::default().placement(Placement::default().storage_class(class));
        let mut expect = pattern(MIB + 5000, 2);
        store.write_file(path, &expect, &options).await.unwrap();

        // Append in odd-sized pieces (partial chunks on flash are read-modify-written).
        let file = store.lookup(path).await.unwrap().into_file().unwrap();
        let mut writer = file.open_write().await.unwrap().writer();
        for piece in [1usize, 4095, 3, 70_000] {
            let more = pattern(piece, piece as u64);
            writer.write(&more).await.unwrap();
            expect.extend_from_slice(&more);
        }
        // A sync commits what is written so far for readers; the writer goes on.
        assert_eq!(writer.sync().await.unwrap().size, expect.len() as u64);
        let seen = store.lookup(path).await.unwrap().into_file().unwrap();
        assert!(seen.read_to_end().await.unwrap() == expect, "{path} synced");
        // The appended bytes' crc32c, from the store's own checksums; and a read's, across a
        // block boundary.
        let appended = crc32c::crc32c(&expect[MIB + 5000..]);
        assert_eq!(writer.appended_crc(), Some(appended), "{path}");
        let (got, crc) = seen
            .reader()
            .read_checked(MIB as u64 - 100, 5000)
            .await
            .unwrap();
        assert!(*got == expect[MIB - 100..MIB + 4900], "{path}");
        assert_eq!(crc, crc32c::crc32c(&got), "{path}");
        // Overwrite across a block boundary, then a few bytes near the start.
        let patch = pattern(10_000, 9);
        writer.seek(MIB as u64 - 3000).await.unwrap();
        writer.write(&patch).await.unwrap();
        expect[MIB - 3000..MIB + 7000].copy_from_slice(&patch);
        writer.seek(10).await.unwrap();
        writer.write(b"crail").await.unwrap();
        expect[10..15].copy_from_slice(b"crail");
        assert_eq!(writer.appended_crc(), None, "not an append any more");
        let stat = writer.close().await.unwrap();
        assert_eq!(stat.size, expect.len() as u64);

        let file = store.lookup(path).await.unwrap().into_file().unwrap();
        assert!(
            file.read_to_end().await.unwrap() == expect,
            "{path} differs"
        );
        let err = file
            .open_write()
            .await
            .unwrap()
            .writer()
            .seek(stat.size + 1)
            .await;
        assert!(matches!(err, Err(Error::PastEndOfFile { .. })));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_write_goes_in_pieces_and_reads_back() {
    // One buffer in flight: a DRAM datanode takes it in 256 KiB pieces, which here start at an
    // unaligned offset and cross piece and block edges.
    let nn = common::start().await;
    let _dram = Datanode::dram(&nn, "127.0.0.2", 8);
    let config = ClientConfig {
        outstanding: 1,
        ..common::client_config(&nn)
    };
    let store = Store::connect(&config).await.unwrap();
    let mut expect = pattern(777, 3);
    store
        .write_file("/pieces", &expect, &CreateOptions::default())
        .await
        .unwrap();
    let file = store.lookup("/pieces").await.unwrap().into_file().unwrap();
    let mut writer = file.open_write().await.unwrap().writer();
    for (i, len) in [MIB, 300_000, MIB - 777, 5].into_iter().enumerate() {
        let more = pattern(len, 10 + i as u64);
        writer
            .write_buffer(bytes::Bytes::from(more.clone()))
            .await
            .unwrap();
        expect.extend_from_slice(&more);
    }
    assert_eq!(writer.close().await.unwrap().size, expect.len() as u64);
    let file = store.lookup("/pieces").await.unwrap().into_file().unwrap();
    assert!(file.read_to_end().await.unwrap() == expect, "bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_host_clients_move_data_through_shared_memory() {
    let nn = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut dram = Datanode::dram(&nn, "127.0.0.4", 8);
    let flash = Datanode::flash(&nn, "127.0.0.4", 16, &dir.path().join("flash.img"));
    let local = common::client_on(&nn, "127.0.0.4").await;
    let remote = common::client_on(&nn, "127.0.0.5").await;
    let config = common::client_config(&nn).with_local_host(common::ip("127.0.0.4"));
    let off = Store::connect(&crail_store::ClientConfig {
        fast_path: false,
        ..config
    })
    .await
    .unwrap();
    for dn in [&dram, &flash] {
        let addr = dn.addr.parse().unwrap();
        assert!(local.uses_fast_path(addr).await.unwrap(), "{}", dn.addr);
        assert!(!remote.uses_fast_path(addr).await.unwrap());
        assert!(!off.uses_fast_path(addr).await.unwrap());
    }

    // 12 MiB: more than the dram tier holds, so the file spans both datanodes. Written in odd
    // pieces (small ones buffered, large ones copied straight into shared memory from where
    // they start inside a block), patched across a block boundary, then read by all three
    // clients.
    let mut expect = pattern(12 * MIB + 777, 40);
    let mut writer = local
        .create_file("/shm", &CreateOptions::default())
        .await
        .unwrap()
        .writer();
    let mut rest = &expect[..];
    for len in [333_333, 2_600_000, 5].into_iter().cycle() {
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        writer.write(piece).await.unwrap();
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    assert_eq!(writer.appended_crc(), None, "bytes still buffered");
    writer.flush().await.unwrap();
    assert_eq!(writer.appended_crc(), Some(crc32c::crc32c(&expect)));
    let patch = pattern(9000, 41);
    writer.seek(3 * MIB as u64 - 4000).await.unwrap();
    writer.write(&patch).await.unwrap();
    expect[3 * MIB - 4000..3 * MIB + 5000].copy_from_slice(&patch);
    writer.close().await.unwrap();
    for store in [&local, &remote, &off] {
        let file = store.lookup("/shm").await.unwrap().into_file().unwrap();
        assert!(file.read_to_end().await.unwrap() == expect);
    }
    let file = local.lookup("/shm").await.unwrap().into_file().unwrap();
    let mut reader = file.reader();
    for (i, offset) in [0usize, 4095, MIB - 1, 7 * MIB + 3, 12 * MIB]
        .iter()
        .enumerate()
    {
        let len = 100_000.min(expect.len() - offset);
        let got = reader.read_at(*offset as u64, len).await.unwrap();
        assert!(
            *got == expect[*offset..offset + len],
            "read {i} at {offset}"
        );
    }

    // The dram datanode dies mid-read: a typed error, not a hang.
    let mut reader = file.reader();
    let first = reader.next_buffer().await.unwrap().unwrap();
    assert!(*first == expect[..first.len()]);
    dram.kill();
    let deadline = Duration::from_secs(20);
    let err = tokio::time::timeout(deadline, async {
        loop {
            match reader.next_buffer().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the read outlived its datanode"),
                Err(e) => break e,
            }
        }
    })
    .await
    .expect("a read from a dead datanode must not hang");
    assert!(
        matches!(
            err,
            Error::ConnectionLost { .. } | Error::LostBlocks { .. } | Error::Connect { .. }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_multifile_writers_read_back_as_one_stream() {
    let nn = common::start().await;
    let _a = Datanode::dram(&nn, "127.0.0.2", 32);
    let _b = Datanode::dram(&nn, "127.0.0.3", 32);
    let store = common::client(&nn).await;
    let multi = store
        .create_multifile("/multi", &CreateOptions::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let multi = multi.clone();
        tasks.push(tokio::spawn(async move {
            let mut writer = multi
                .create_child(&format!("part-{i}"), &CreateOptions::default())
                .await
                .unwrap()
                .writer();
            // Interleave small writes so the writers really run at the same time.
            let data = pattern(2 * MIB + i as usize * 1000, 10 + i);
            for piece in data.chunks(100_000) {
                writer.write(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            writer.close().await.unwrap();
            data
        }));
    }
    let mut expect = Vec::new();
    for task in tasks {
        expect.extend(task.await.unwrap());
    }
    let merged = multi.reader().await.unwrap().read_to_end().await.unwrap();
    assert_eq!(merged.len(), expect.len());
    assert!(
        merged == expect,
        "merged stream differs from the children in name order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_and_blocking_adapters_and_keyvalues() {
    let nn = common::start().await;
    let _dn = Datanode::dram(&nn, "127.0.0.2", 32);
    let store = common::client(&nn).await;

    // tokio AsyncWrite: shutdown commits.
    let data = pattern(3 * MIB + 17, 3);
    let mut w = store
        .create_file("/async", &CreateOptions::default())
        .await
        .unwrap()
        .writer()
        .into_async_write();
    for piece in data.chunks(65_537) {
        w.write_all(piece).await.unwrap();
    }
    w.shutdown().await.unwrap();
    assert_eq!(w.stat().unwrap().size, data.len() as u64);

    // tokio AsyncRead.
    let file = store.lookup("/async").await.unwrap().into_file().unwrap();
    let mut back = Vec::new();
    file.reader()
        .into_async_read()
        .read_to_end(&mut back)
        .await
        .unwrap();
    assert!(back == data);

    // Blocking std::io on a plain thread through SyncIoBridge.
    let reader = file.reader().into_async_read();
    let expect = data.clone();
    tokio::task::spawn_blocking(move || {
        let mut sync = tokio_util::io::SyncIoBridge::new(reader);
        let mut got = Vec::new();
        sync.read_to_end(&mut got).unwrap();
        assert!(got == expect);
    })
    .await
    .unwrap();
    let writer = store
        .create_file("/blocking", &CreateOptions::default())
        .await
        .unwrap()
        .writer()
        .into_async_write();
    let bytes = data.clone();
    tokio::task::spawn_blocking(move || {
        let mut sync = tokio_util::io::SyncIoBridge::new(writer);
        sync.write_all(&bytes).unwrap();
        sync.shutdown().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        store.stat("/blocking").await.unwrap().size,
        data.len() as u64
    );

    // Keyvalues: put, get, re-put; a held old value stays readable.
    store
        .create_table("/t", &CreateOptions::default())
        .await
        .unwrap();
    store
        .put_value("/t/k", b"first value", &CreateOptions::default())
        .await
        .unwrap();
    let old = store.get("/t/k").await.unwrap();
    store
        .put_value("/t/k", &pattern(MIB + 1, 4), &CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(old.read_to_end().await.unwrap(), b"first value");
    let new = store.get("/t/k").await.unwrap();
    assert!(new.read_to_end().await.unwrap() == pattern(MIB + 1, 4));
    // Dropping an unclosed writer aborts: nothing is committed.
    {
        let mut w = store
            .create_file("/aborted", &CreateOptions::default())
            .await
            .unwrap()
            .writer();
        w.write(&pattern(1000, 5)).await.unwrap();
        w.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.stat("/aborted").await.unwrap().size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_flash_bytes_are_a_checksum_error_never_data() {
    let nn = common::start().await;
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("flash.img");
    let _flash = Datanode::flash(&nn, "127.0.0.2", 16, &image);
    let store = common::client(&nn).await;
    let data = pattern(2 * MIB, 6);
    write(&store, "/victim", &data).await;
    write(&store, "/bystander", &pattern(MIB, 7)).await;

    let file = store.lookup("/victim").await.unwrap().into_file().unwrap();
    let second = file.block_locations(1, 1).await.unwrap()[0].clone();
    // Flip one byte of the second block on the "device", behind the datanode's back.
    let at = second.offset + 12_345;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, at).unwrap();
        byte[0] ^= 0x40;
        f.write_all_at(&byte, at).unwrap();
        f.sync_all().unwrap();
    }
    let err = file.read_to_end().await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("/victim"), "{err}");
    // The first block is intact and readable; so is every other file.
    let mut reader = file.reader();
    assert!(*reader.read_at(0, MIB).await.unwrap() == data[..MIB]);
    assert!(matches!(
        reader.read_at(MIB as u64 + 12_000, 1000).await,
        Err(Error::ChecksumMismatch { .. })
    ));
    let bystander = store
        .lookup("/bystander")
        .await
        .unwrap()
        .into_file()
        .unwrap();
    assert!(bystander.read_to_end().await.unwrap() == pattern(MIB, 7));
    // Rewriting the block heals it.
    let mut w = file.open_write().await.unwrap().writer();
    w.seek(MIB as u64).await.unwrap();
    w.write(&data[MIB..]).await.unwrap();
    w.close().await.unwrap();
    assert!(file.read_to_end().await.unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datanode_killed_mid_read_fails_that_read_and_others_go_on() {
    let nn = common::start().await;
    let mut victim = Datanode::dram(&nn, "127.0.0.2", 16);
    let _other = Datanode::dram(&nn, "127.0.0.3", 16);
    let on = |host: &str| {
        CreateOptions::default().placement(Placement::default().location(common::ip(host)))
    };
    let store = common::client(&nn).await;
    let data = pattern(8 * MIB, 8);
    store
        .write_file("/doomed", &data, &on("127.0.0.2"))
        .await
        .unwrap();
    store
        .write_file("/safe", &data, &on("127.0.0.3"))
        .await
        .unwrap();

    let file = store.lookup("/doomed").await.unwrap().into_file().unwrap();
    let mut reader = file.reader();
    let first = reader.next_buffer().await.unwrap().unwrap();
    assert!(*first == data[..first.len()]);
    victim.kill();
    let mut failure = None;
    while let Some(result) = reader.next_buffer().await.transpose() {
        if let Err(e) = result {
            failure = Some(e);
            break;
        }
    }
    let err = failure.expect("reads after the kill must fail");
    assert!(
        matches!(
            err,
            Error::ConnectionLost { .. } | Error::LostBlocks { .. } | Error::Connect { .. }
        ),
        "{err}"
    );
    // Once the namenode has noticed, locating the file's blocks names the loss.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match file.reader().read_to_end().await {
            Err(Error::LostBlocks { blocks, .. }) => {
                assert_eq!(blocks.len(), 8);
                break;
            }
            other => assert!(other.is_err() && Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let safe = store.lookup("/safe").await.unwrap().into_file().unwrap();
    assert!(safe.read_to_end().await.unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_is_a_typed_error_and_commits_nothing() {
    let nn = common::start().await;
    let _dn = Datanode::dram(&nn, "127.0.0.2", 4);
    let store = common::client(&nn).await;
    let mut w = store
        .create_file("/too-big", &CreateOptions::default())
        .await
        .unwrap()
        .writer();
    let result = async {
        w.write(&pattern(5 * MIB, 9)).await?;
        w.flush().await
    }
    .await;
    assert!(matches!(result, Err(Error::StoreFull { .. })), "{result:?}");
    assert_eq!(w.appended_crc(), None, "not after a failed write");
    w.abort().await.unwrap();
    assert_eq!(store.stat("/too-big").await.unwrap().size, 0);
    // Everything is free again: a file that fits is written whole.
    write(&store, "/fits", &pattern(4 * MIB, 10)).await;
    assert_eq!(common::used_blocks(&store).await, 4);
}

/// Sends a raw frame (plus payload) and returns the reply: (kind, read header, error).
async fn raw_call(
    stream: &mut tokio::net::TcpStream,
    rbuf: &mut BytesMut,
    kind: u16,
    id: u64,
    body: &[u8],
    payload: &[u8],
) -> (u16, Option<(u32, u32)>, Option<Error>) {
    let mut frame = testing::raw_frame(kind, 0, id, body);
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await.unwrap();
    loop {
        if let Some((kind, got, read, error)) = testing::decode_data_reply(rbuf).unwrap() {
            assert_eq!(got, id);
            return (kind, read, error);
        }
        let n = stream.read_buf(rbuf).await.unwrap();
        assert!(n > 0, "datanode closed the connection");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_requests_get_typed_errors_and_the_connection_goes_on() {
    let nn = common::start().await;
    let dn = Datanode::dram(&nn, "127.0.0.2", 4);
    let mut stream = tokio::net::TcpStream::connect(&dn.addr).await.unwrap();
    testing::handshake(&mut stream).await.unwrap();
    let mut rbuf = BytesMut::new();
    let payload = pattern(1000, 11);
    let crc = crc32c::crc32c(&payload);
    let cap = 4 * MIB as u64;
    let id = dn.id;
    // A block of a file, with the grant its writer gets.
    let store = common::client(&nn).await;
    let lease = store
        .create_file("/granted", &CreateOptions::default())
        .await
        .unwrap();
    let block = lease.allocate(0, 1).await.unwrap().remove(0);
    assert!(block.grant.write);
    let (b, g) = (block.offset, Some(&block));
    let read_only = store.lookup("/granted").await.unwrap().into_file().unwrap();

    let read_grant = read_only.block_locations(0, 1).await.unwrap().remove(0);
    assert!(!read_grant.grant.write);
    let cases: Vec<(&str, u16, Vec<u8>, &[u8])> = vec![
        (
            "no grant",
            testing::KIND_WRITE,
            testing::write_body(id, b, 1000, crc, None),
            &payload,
        ),
        (
            "read-only grant",
            testing::KIND_WRITE,
            testing::write_body(id, b, 1000, crc, Some(&read_grant)),
            &payload,
        ),
        (
            "read without a grant",
            testing::KIND_READ,
            testing::read_body(id, b, 10, None),
            &[],
        ),
        (
            "stale write",
            testing::KIND_WRITE,
            testing::write_body(id + 7, b, 1000, crc, g),
            &payload,
        ),
        (
            "stale read",
            testing::KIND_READ,
            testing::read_body(id + 7, b, 10, g),
            &[],
        ),
        (
            "past capacity",
            testing::KIND_WRITE,
            testing::write_body(id, cap - 10, 1000, crc, g),
            &payload,
        ),
        (
            "across a block",
            testing::KIND_WRITE,
            testing::write_body(id, b + MIB as u64 - 10, 1000, crc, g),
            &payload,
        ),
        (
            "wrong checksum",
            testing::KIND_WRITE,
            testing::write_body(id, b, 1000, crc ^ 1, g),
            &payload,
        ),
        (
            "read past capacity",
            testing::KIND_READ,
            testing::read_body(id, cap, 1, g),
            &[],
        ),
        (
            "read across a block",
            testing::KIND_READ,
            testing::read_body(id, b + MIB as u64 - 1, 2, g),
            &[],
        ),
        ("unknown kind", 999, vec![], &[]),
        (
            "namenode message",
            testing::KIND_LOOKUP,
            testing::lookup_body(b"/x"),
            &[],
        ),
    ];
    for (i, (what, kind, body, payload)) in cases.iter().enumerate() {
        let (_, _, error) =
            raw_call(&mut stream, &mut rbuf, *kind, 10 + i as u64, body, payload).await;
        let error = error.unwrap_or_else(|| panic!("{what}: no error"));
        let ok = match *what {
            "wrong checksum" => matches!(error, Error::ChecksumMismatch { .. }),
            "unknown kind" => matches!(error, Error::UnknownMessage { .. }),
            "stale write" | "stale read" => {
                matches!(error, Error::StaleLocation { expected, current } if expected == id + 7 && current == id)
            }
            "namenode message" => matches!(error, Error::UnexpectedMessage { .. }),
            "no grant" | "read-only grant" | "read without a grant" => {
                matches!(error, Error::GrantRefused { .. })
            }
            _ => matches!(error, Error::BadRange { .. }),
        };
        assert!(ok, "{what}: {error}");
    }
    // The chunk a failed write touched reads as corrupt, never as half-new data.
    let (_, _, error) = raw_call(
        &mut stream,
        &mut rbuf,
        testing::KIND_READ,
        30,
        &testing::read_body(id, b, 10, g),
        &[],
    )
    .await;
    assert!(
        matches!(error, Some(Error::ChecksumMismatch { .. })),
        "{error:?}"
    );
    // A write that keeps part of a poisoned chunk is refused too (it would re-checksum bad
    // bytes as good); a write of the whole chunk heals it.
    let (_, _, error) = raw_call(
        &mut stream,
        &mut rbuf,
        testing::KIND_WRITE,
        33,
        &testing::write_body(id, b, 1000, crc, g),
        &payload,
    )
    .await;
    assert!(
        matches!(error, Some(Error::ChecksumMismatch { .. })),
        "{error:?}"
    );
    let chunk = pattern(4096, 13);
    let (_, _, error) = raw_call(
        &mut stream,
        &mut rbuf,
        testing::KIND_WRITE,
        34,
        &testing::write_body(id, b, 4096, crc32c::crc32c(&chunk), g),
        &chunk,
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    // The same connection still works: write, then read back with a matching crc.
    let (_, _, error) = raw_call(
        &mut stream,
        &mut rbuf,
        testing::KIND_WRITE,
        31,
        &testing::write_body(id, b, 1000, crc, g),
        &payload,
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    let (_, read, error) = raw_call(
        &mut stream,
        &mut rbuf,
        testing::KIND_READ,
        32,
        &testing::read_body(id, b, 1000, g),
        &[],
    )
    .await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(read, Some((1000, crc)));
    while rbuf.len() < 1000 {
        stream.read_buf(&mut rbuf).await.unwrap();
    }
    assert!(rbuf[..1000] == payload[..]);
    rbuf.clear();
    // A payload longer than a block cannot be skipped: the connection closes with the reason.
    let (_, _, error) = raw_call(
        &mut stream,
        &mut rbuf,
        testing::KIND_WRITE,
        0,
        &testing::write_body(id, b, 2 << 20, 0, g),
        &[],
    )
    .await;
    assert!(matches!(error, Some(Error::BadRange { .. })), "{error:?}");
    // Other clients are unaffected.
    let store = common::client(&nn).await;
    write(&store, "/after", &pattern(MIB, 12)).await;
    let file = store.lookup("/after").await.unwrap().into_file().unwrap();
    assert!(file.read_to_end().await.unwrap() == pattern(MIB, 12));
}

/// Writes 1.5 MiB to `path` and leaves the writer open (its blocks allocated, its block
/// locations cached).
async fn half_written(store: &Store, path: &str) -> crail_store::FileWriter {
    let mut writer = store
        .create_file(path, &CreateOptions::default())
        .await
        .unwrap()
        .writer();
    writer.write(&pattern(3 * MIB / 2, 40)).await.unwrap();
    writer.flush().await.unwrap();
    writer
}

/// The writer goes on in the block it was in: fenced off, whatever else fails after.
async fn resume_is_fenced(mut writer: crail_store::FileWriter) {
    let stale = pattern(100 << 10, 41);
    let error = match writer.write(&stale).await {
        Err(e) => e,
        Ok(()) => writer.close().await.unwrap_err(),
    };
    assert!(matches!(error, Error::Fenced { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_lease_ended_is_fenced_and_the_new_owner_keeps_its_bytes() {
    let nn = common::start().await;
    let _dn = Datanode::dram(&nn, "127.0.0.2", 4);
    let (paused, other) = (common::client(&nn).await, common::client(&nn).await);

    // Paused past its lease (1 s): its blocks go back to the store, and the next file (which
    // needs all 4 blocks of the store) gets them.
    let writer = half_written(&paused, "/paused").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let owned = pattern(4 * MIB, 42);
    write(&other, "/owner", &owned).await;
    resume_is_fenced(writer).await;
    let file = other.lookup("/owner").await.unwrap().into_file().unwrap();
    assert!(file.read_to_end().await.unwrap() == owned);

    // Its file deleted while it writes: the same.
    other.delete("/owner", false).await.unwrap();
    let writer = half_written(&paused, "/deleted").await;
    other.delete("/deleted", false).await.unwrap();
    write(&other, "/owner", &owned).await;
    resume_is_fenced(writer).await;
    let file = other.lookup("/owner").await.unwrap().into_file().unwrap();
    assert!(file.read_to_end().await.unwrap() == owned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flash_file_is_private_locked_and_never_reached_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let nn = common::start().await;
    // O_DIRECT needs a real filesystem: the target directory, not tmpfs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("flash.img");
    let start = |path: std::path::PathBuf| {
        let client = common::client_config(&nn);
        async move {
            let config = DatanodeConfig {
                listen: "127.0.0.2:0".parse().unwrap(),
                tier: TierKind::Flash,
                capacity: ByteSize(4 << 20),
                path: Some(path),
                ..DatanodeConfig::default()
            };
            let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
            crail_store::datanode::Datanode::start(listener, config, client).await
        }
    };
    let first = start(path.clone()).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let err = start(path.clone()).await.unwrap_err();
    assert!(
        err.to_string().contains("in use by another datanode"),
        "{err}"
    );
    drop(first);
    // Its lock goes with the last descriptor of the file (the I/O engine's thread closes its
    // own a moment later).
    let mut again = start(path.clone()).await;
    for _ in 0..50 {
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        again = start(path.clone()).await;
    }
    drop(again.unwrap());
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = start(link).await.unwrap_err();
    assert!(err.to_string().contains("is a symlink"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_never_reads_its_socket_stalls_no_writer() {
    let nn = common::start().await;
    let dn = Datanode::dram(&nn, "127.0.0.2", 8);
    // From another host: every byte goes over TCP, none through shared memory.
    let store = common::client(&nn).await;
    let half = MIB / 2;
    let mut expect = pattern(half, 21);
    store
        .write_file("/shared", &expect, &CreateOptions::default())
        .await
        .unwrap();
    let file = store.lookup("/shared").await.unwrap().into_file().unwrap();
    let block = file.all_block_locations().await.unwrap().remove(0);

    // A peer asks for the first half of the block again and again and never reads a reply:
    // its socket fills, and the datanode's replies to it must wait.
    let mut stalled = tokio::net::TcpStream::connect(&dn.addr).await.unwrap();
    testing::handshake(&mut stalled).await.unwrap();
    let mut requests = Vec::new();
    for id in 1..=64u64 {
        let body = testing::read_body(dn.id, block.offset, half as u32, Some(&block));
        requests.extend(testing::raw_frame(testing::KIND_READ, 0, id, &body));
    }
    stalled.write_all(&requests).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The writer appends to the same block (the second half): it is not held up by the
    // stalled replies (before, it waited for the block's lock until its 30 s timed out).
    let more = pattern(half, 22);
    let appended = tokio::time::timeout(Duration::from_secs(20), async {
        let mut writer = file.open_write().await?.writer();
        writer.write(&more).await?;
        writer.close().await
    })
    .await
    .expect("the append is not stalled by a reader that does not read");
    appended.unwrap();
    expect.extend_from_slice(&more);
    let seen = store.lookup("/shared").await.unwrap().into_file().unwrap();
    assert!(seen.read_to_end().await.unwrap() == expect);
    // The stalled peer still gets its replies, whole, once it reads.
    let mut rbuf = BytesMut::new();
    let mut got = 0;
    while got < 64 {
        if let Some((_, _, read, error)) = testing::decode_data_reply(&mut rbuf).unwrap() {
            assert!(error.is_none(), "{error:?}");
            let (len, crc) = read.unwrap();
            while rbuf.len() < len as usize {
                assert!(stalled.read_buf(&mut rbuf).await.unwrap() > 0);
            }
            let payload = rbuf.split_to(len as usize);
            assert_eq!(crc32c::crc32c(&payload), crc);
            assert!(payload[..] == expect[..half]);
            got += 1;
            continue;
        }
        assert!(stalled.read_buf(&mut rbuf).await.unwrap() > 0);
    }
}
