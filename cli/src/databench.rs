//! `crail iobench` data tests, after Crail's iobench: sequential write and read of a file
//! (`write`, `read`: one buffer in flight; `writeAsync`, `readAsync`: `-o` in flight) and
//! `readRandom` (`-k` reads of one buffer at random aligned offsets, `-o` at once).
//!
//! Sequential tests also measure a plain TCP stream from this process to the datanode's
//! host, same buffer size, same amount of data, in the same run. `baseline_mb_per_sec`, the
//! figure the data plane is judged against, keeps the datanode side's bytes in memory the size
//! of the file (uploads land in fresh memory, downloads come from it), as a datanode must;
//! `socket_mb_per_sec` reuses one cached buffer at each end and so measures the socket alone.
//! On this machine the two differ by almost 2x for uploads: storing a gigabyte costs memory
//! bandwidth that a cached buffer never pays.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use crail_store::{ClientConfig, CreateOptions, Store};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

use crate::iotests::{Test, quantile};

/// What the data tests need from the command line.
#[derive(Debug)]
pub(crate) struct Params {
    pub(crate) test: Test,
    pub(crate) size: u64,
    pub(crate) buffer: usize,
    pub(crate) count: u64,
    pub(crate) outstanding: usize,
    pub(crate) storage_class: Option<u32>,
    pub(crate) json: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    test: Test,
    bytes: u64,
    buffer: usize,
    ops: u64,
    outstanding: usize,
    /// Sequential tests: how many times the test and its baselines ran, alternating; the
    /// MB/s figures are medians over the rounds.
    rounds: u64,
    seconds: f64,
    mb_per_sec: f64,
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    /// Plain TCP between the same addresses, the datanode side's bytes in memory the size of
    /// the file (the figure the data plane is judged against).
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_mb_per_sec: Option<f64>,
    /// Plain TCP between the same addresses, one cached buffer at each end: the socket alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_mb_per_sec: Option<f64>,
    /// `readRandom`: p50 of a plain TCP round trip between the same addresses (a small
    /// request answered by one buffer, blocking threads that sleep while they wait): the
    /// machine's floor for a remote read.
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_p50_us: Option<f64>,
    datanode: String,
    /// How the data travelled: "tcp", or "shared memory" (the same-host fast path).
    transport: &'static str,
}

pub(crate) async fn run(mut config: ClientConfig, p: Params) -> anyhow::Result<()> {
    if p.buffer == 0 || p.size == 0 {
        bail!("-s and -b must be at least 1 byte");
    }
    let sequential = matches!(
        p.test,
        Test::Write | Test::Read | Test::WriteAsync | Test::ReadAsync
    );
    config.buffer_size = crail_store::ByteSize(p.buffer as u64);
    config.outstanding = match p.test {
        Test::Write | Test::Read => 1,
        _ => p.outstanding,
    };
    let store = Store::connect(&config)
        .await
        .with_context(|| format!("cannot reach the namenode at {}", config.namenode))?;
    if p.buffer as u64 > store.block_size() {
        bail!(
            "-b {} is larger than a block ({} bytes)",
            p.buffer,
            store.block_size()
        );
    }
    let path = format!("/iobench-data-{}", std::process::id());
    let _ = store.delete(&path, false).await;
    let data = Bytes::from(
        (0..p.buffer)
            .map(|i| (i * 131 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut latencies = Vec::new();
    let upload = matches!(p.test, Test::Write | Test::WriteAsync);
    // A read test reads a file written once, untimed.
    if !upload {
        write_file(&store, &path, &p, &data, None).await?;
    }
    let local = config.local_host.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let rounds = if sequential { p.count.max(1) } else { 1 };
    // Each round times the test, then (sequential tests) the plain TCP streams between the
    // same addresses, so slow drift of this machine hits both sides of the comparison alike.
    let (mut rates, mut at_rest, mut socket) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bytes, mut elapsed) = (0u64, Duration::ZERO);
    let mut first = None;
    for _ in 0..rounds {
        let start = Instant::now();
        let moved = match p.test {
            Test::Write | Test::WriteAsync => {
                write_file(&store, &path, &p, &data, Some(&mut latencies)).await?
            }
            Test::Read | Test::ReadAsync => {
                let file = store.lookup(&path).await?.into_file()?;
                let mut reader = file.reader();
                let (mut read, mut t) = (0u64, Instant::now());
                while let Some(buf) = reader.next_buffer().await? {
                    latencies.push(t.elapsed().as_secs_f64() * 1e6);
                    read += buf.len() as u64;
                    t = Instant::now();
                }
                read
            }
            Test::ReadRandom => {
                let file = store.lookup(&path).await?.into_file()?;
                random_reads(&file, &p, &mut latencies).await?
            }
            _ => bail!("not a data test"),
        };
        let took = start.elapsed();
        bytes += moved;
        elapsed += took;
        rates.push(moved as f64 / took.as_secs_f64().max(1e-9) / 1e6);
        let file = store.lookup(&path).await?.into_file()?;
        let location = file
            .block_locations(0, 1)
            .await?
            .first()
            .cloned()
            .context("the file has no blocks")?;
        if sequential && on_this_host(location.host) {
            let tcp =
                |at_rest| tcp_baseline(local, location.host, moved, p.buffer, upload, at_rest);
            at_rest.push(tcp(true).await?);
            socket.push(tcp(false).await?);
        }
        first = Some(location);
    }
    let first = first.context("no round ran")?;
    let transport = if store.uses_fast_path(first.address).await? {
        "shared memory"
    } else {
        "tcp"
    };
    let median = |v: &mut Vec<f64>| {
        v.sort_unstable_by(f64::total_cmp);
        (!v.is_empty()).then(|| quantile(v, 0.5))
    };
    let (baseline, socket_only) = (median(&mut at_rest), median(&mut socket));
    let round_trip = if matches!(p.test, Test::ReadRandom) && on_this_host(first.host) {
        let local = config.local_host.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let (host, buffer) = (first.host, p.buffer);
        let count = latencies.len().clamp(1, 20_000);
        Some(tcp_round_trip(local, host, buffer, count).await?)
    } else {
        None
    };
    store.delete(&path, false).await?;

    latencies.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| quantile(&latencies, q);
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let summary = Summary {
        test: p.test,
        bytes,
        buffer: p.buffer,
        ops: latencies.len() as u64,
        outstanding: config.outstanding,
        rounds,
        seconds,
        mb_per_sec: median(&mut rates).unwrap_or(0.0),
        ops_per_sec: latencies.len() as f64 / seconds,
        p50_us: at(0.50),
        p99_us: at(0.99),
        baseline_mb_per_sec: baseline,
        socket_mb_per_sec: socket_only,
        baseline_p50_us: round_trip,
        datanode: first.address.to_string(),
        transport,
    };
    let baseline_text = match (summary.baseline_mb_per_sec, summary.socket_mb_per_sec) {
        (Some(b), Some(s)) => format!(
            ", plain TCP {b:.0} MB/s ({:.0}%), socket alone {s:.0} MB/s ({:.0}%)",
            summary.mb_per_sec / b * 100.0,
            summary.mb_per_sec / s * 100.0
        ),
        _ => match summary.baseline_p50_us {
            Some(rt) => format!(", plain TCP round trip p50 {rt:.1} us"),
            None if !on_this_host(first.host) => {
                ", no TCP baseline (the datanode's address is on another host)".into()
            }
            None => String::new(),
        },
    };
    println!(
        "{:?}: {} bytes in {} ops of {} B, {} outstanding, {:.3} s, {:.0} MB/s, p50 {:.1} us, p99 {:.1} us{baseline_text} (datanode {}, {})",
        summary.test,
        summary.bytes,
        summary.ops,
        summary.buffer,
        summary.outstanding,
        summary.seconds,
        summary.mb_per_sec,
        summary.p50_us,
        summary.p99_us,
        summary.datanode,
        summary.transport
    );
    if p.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Writes the test file afresh (`-s` bytes in `-b` buffers, closed), recording the time of
/// each buffer's write when `latencies` is given. Returns the bytes written.
async fn write_file(
    store: &Store,
    path: &str,
    p: &Params,
    data: &Bytes,
    mut latencies: Option<&mut Vec<f64>>,
) -> anyhow::Result<u64> {
    let _ = store.delete(path, false).await;
    let mut placement = crail_store::Placement::default();
    if let Some(class) = p.storage_class {
        placement = placement.storage_class(class);
    }
    let options = CreateOptions::default().placement(placement);
    let mut writer = store.create_file(path, &options).await?.writer();
    let mut left = p.size;
    while left > 0 {
        let n = left.min(p.buffer as u64) as usize;
        let t = Instant::now();
        writer.write_buffer(data.slice(..n)).await?;
        if let Some(latencies) = latencies.as_deref_mut() {
            latencies.push(t.elapsed().as_secs_f64() * 1e6);
        }
        left -= n as u64;
    }
    writer.close().await?;
    Ok(p.size)
}

async fn random_reads(
    file: &crail_store::File,
    p: &Params,
    latencies: &mut Vec<f64>,
) -> anyhow::Result<u64> {
    let slots = (file.size() / p.buffer as u64).max(1);
    let tasks = p.outstanding.max(1);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut reader = file.reader();
        let ops = p.count / tasks as u64 + u64::from((t as u64) < p.count % tasks as u64);
        let buffer = p.buffer;
        handles.push(tokio::spawn(async move {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
            let mut lat = Vec::with_capacity(ops as usize);
            let mut bytes = 0u64;
            for _ in 0..ops {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let offset = (x % slots) * buffer as u64;
                let t = Instant::now();
                let buf = reader.read_at(offset, buffer).await?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                bytes += buf.len() as u64;
            }
            Ok::<_, crail_store::Error>((lat, bytes))
        }));
    }
    let mut bytes = 0;
    for handle in handles {
        let (lat, b) = handle.await??;
        latencies.extend(lat);
        bytes += b;
    }
    Ok(bytes)
}

/// Most memory a baseline keeps at rest; longer streams wrap around it (still far larger
/// than any cache).
const AT_REST_MAX: usize = 1 << 30;

/// Streams `bytes` over one plain TCP connection from `local` to a listener on `remote`'s
/// address, `buffer` bytes per call, and returns MB/s. `upload`: this side sends (as a write
/// test does); otherwise the listener side sends (as a read).
///
/// `at_rest`: the far side's bytes live in memory the size of the stream (up to 1 GiB), as a
/// datanode's do: an upload lands in fresh memory, a download comes from it. Otherwise both
/// sides reuse one buffer that stays in cache, which measures the socket alone.
/// Whether `ip` is an address of this host: the TCP baselines listen there, so they only run
/// against a datanode on this machine (its 127.0.0.x), not across a real link.
fn on_this_host(ip: IpAddr) -> bool {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}

pub(crate) async fn tcp_baseline(
    local: IpAddr,
    remote: IpAddr,
    bytes: u64,
    buffer: usize,
    upload: bool,
    at_rest: bool,
) -> anyhow::Result<f64> {
    let listener = TcpListener::bind(SocketAddr::new(remote, 0)).await?;
    let addr = listener.local_addr()?;
    let area = if at_rest {
        usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(AT_REST_MAX)
    } else {
        buffer
    };
    // Touched now, before the clock starts: page faults are not the network's cost.
    let mut far = vec![7u8; area.max(buffer)];
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let (mut left, mut at) = (bytes, 0usize);
        while left > 0 {
            let n = left.min(buffer as u64) as usize;
            if at + n > far.len() {
                at = 0;
            }
            if upload {
                s.read_exact(&mut far[at..at + n]).await?;
            } else {
                s.write_all(&far[at..at + n]).await?;
            }
            at += n;
            left -= n as u64;
        }
        s.write_all(&[1]).await?;
        Ok::<_, std::io::Error>(())
    });
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    let mut s = socket.connect(addr).await?;
    s.set_nodelay(true)?;
    let start = Instant::now();
    let mut near = vec![7u8; buffer];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buffer as u64) as usize;
        if upload {
            s.write_all(&near[..n]).await?;
        } else {
            s.read_exact(&mut near[..n]).await?;
        }
        left -= n as u64;
    }
    let mut done = [0u8; 1];
    s.read_exact(&mut done).await?;
    let elapsed = start.elapsed().as_secs_f64();
    server.await??;
    Ok(bytes as f64 / elapsed.max(1e-9) / 1e6)
}

/// p50 in microseconds of `count` plain TCP round trips from `local` to a listener on
/// `remote`'s address: 32 bytes out, `buffer` bytes back, blocking threads on both ends (the
/// kernel's own wakeup path, no runtime, no polling).
async fn tcp_round_trip(
    local: IpAddr,
    remote: IpAddr,
    buffer: usize,
    count: usize,
) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(SocketAddr::new(remote, 0))?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let (mut request, reply) = ([0u8; 32], vec![7u8; buffer]);
        while s.read_exact(&mut request).is_ok() {
            s.write_all(&reply)?;
        }
        Ok(())
    });
    let socket = if local.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    let mut s = socket.connect(addr).await?.into_std()?;
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    let times = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<f64>> {
        let (request, mut reply) = ([1u8; 32], vec![0u8; buffer]);
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            s.write_all(&request)?;
            s.read_exact(&mut reply)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(times)
    })
    .await??;
    let mut times = times;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("round-trip server panicked"))??;
    times.sort_unstable_by(f64::total_cmp);
    Ok(quantile(&times, 0.50))
}
