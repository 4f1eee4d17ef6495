//! `crail shufflebench`: the shuffle service of a running cluster against a plain TCP stream.
//!
//! Engines on every node that advertises a shuffle service (one store client and one
//! [`ShuffleClient`] per node, connected from the node's address, as an executor there would
//! be) shuffle `--size` bytes of TeraSort records (10-byte key, 90-byte value) for each
//! `MAPSxPARTITIONS` shape: map `m` runs on node `m % nodes`, partition `p` is reduced on node
//! `p % nodes`, `--tasks` at a time per node. Map output comes from buffers generated before
//! the clock starts. A round is timed from the first map's lease to the last reduce's last
//! byte; its aggregate throughput is bytes written plus bytes read over that time.
//!
//! Each round is paired with a plain TCP stream of the same `--size` between two node
//! addresses, one cached 1 MiB buffer at each end (the socket alone: the loopback's ceiling on
//! this machine), run just before it; figures are medians over the rounds. Reducers check
//! every partition's byte count and the key range of each chunk's first and last record (the
//! service checks every segment's crc32c).
//!
//! Per shape it also prints how it scales at equal bytes: its time over the first shape's,
//! the store it held once its maps committed (all tiers, and DRAM; against the bytes
//! shuffled: what the layout costs beyond the data), and the peak resident memory of this
//! process, where every node's engine runs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use crail_shuffle::{DEFAULT_PREFETCH, Meta, ShuffleClient, ShuffleId};
use crail_store::{ByteSize, Config, Store};
use serde::Serialize;

/// TeraSort's record: a 10-byte key and a 90-byte value.
const RECORD: usize = 100;
/// The plain TCP stream's buffer.
const TCP_BUFFER: usize = 1 << 20;

/// A shuffle's shape: map tasks and reduce partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Shape {
    maps: u32,
    partitions: u32,
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not MAPSxPARTITIONS (e.g. 64x32)");
        let (maps, partitions) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let maps: u32 = maps.trim().parse().map_err(|_| bad())?;
        let partitions: u32 = partitions.trim().parse().map_err(|_| bad())?;
        if maps == 0 || partitions == 0 {
            return Err(format!("`{s}`: maps and partitions must be at least 1"));
        }
        Ok(Self { maps, partitions })
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    client: crate::ClientArgs,
    /// Bytes to shuffle per round (whole 100-byte records).
    #[arg(long, default_value = "2GiB")]
    size: ByteSize,
    /// Shapes to run, MAPSxPARTITIONS, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64x32,256x32,64x128,256x128"
    )]
    shapes: Vec<Shape>,
    /// Map (then reduce) tasks running at once on each node [default: this machine's cores].
    #[arg(long)]
    tasks: Option<usize>,
    /// Rounds per shape, each with its TCP stream; figures are medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Untimed rounds of the first shape before any figure, to warm connections, buffer
    /// pools and the datanodes' memory.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Group files a reduce task reads at once.
    #[arg(long, default_value_t = DEFAULT_PREFETCH)]
    prefetch: usize,
    /// Copies of every shuffle file (1: none extra).
    #[arg(long, default_value_t = 1)]
    replication: u32,
    /// Print one JSON object per shape instead of the table.
    #[arg(long)]
    json: bool,
}

/// One shape's medians.
#[derive(Debug, Serialize)]
struct Row {
    maps: u32,
    partitions: u32,
    nodes: usize,
    tasks_per_node: usize,
    replication: u32,
    rounds: usize,
    /// Shuffled bytes (written once, read once; replicas not counted).
    bytes: u64,
    map_secs: f64,
    reduce_secs: f64,
    secs: f64,
    write_mb_per_sec: f64,
    read_mb_per_sec: f64,
    /// (bytes written + bytes read) / (map time + reduce time).
    aggregate_mb_per_sec: f64,
    /// The plain TCP stream, the socket alone.
    tcp_mb_per_sec: f64,
    /// Aggregate over the TCP stream.
    ratio: f64,
    /// This shape's time over the first shape's (the scaling at equal bytes).
    times_first: f64,
    /// Bytes in blocks the shuffle held once its maps committed, all tiers (its files'
    /// blocks, records and metadata; replicas included).
    held_bytes: u64,
    /// Of those, in DRAM (storage class 0).
    held_dram_bytes: u64,
    /// Held bytes per shuffled byte.
    held_per_byte: f64,
    /// Non-empty segments (map outputs of one partition) per round.
    segments: u64,
    /// Commit record bytes per non-empty segment (the metadata a segment costs).
    record_bytes_per_segment: f64,
    /// The peak resident memory of this process (every node's engine, and the input) over
    /// the shape's rounds; `None` where the kernel does not say.
    peak_rss_bytes: Option<u64>,
}

/// One round's times and the store it held.
struct Round {
    map_secs: f64,
    reduce_secs: f64,
    held: (u64, u64),
    /// Non-empty segments and their commit records' bytes.
    segments: u64,
    record_bytes: u64,
}

/// A map's non-empty partitions and where their records are in the pool.
type MapParts = Vec<(u32, std::ops::Range<usize>)>;

/// The map outputs of one shape: map `m`'s non-empty partitions `(p, range)`, `pool[range]`
/// records whose keys fall in partition `p`'s key range.
struct Input {
    pool: Arc<Vec<u8>>,
    ranges: Arc<Vec<MapParts>>,
    /// Bytes per partition over all maps.
    expected: Arc<Vec<u64>>,
}

pub(crate) async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let records = args.size.bytes() / RECORD as u64;
    if records == 0 {
        bail!("--size must hold at least one {RECORD}-byte record");
    }
    if args.rounds == 0 || args.prefetch == 0 || args.replication == 0 {
        bail!("--rounds, --prefetch and --replication must be at least 1");
    }
    if args.tasks == Some(0) {
        bail!("--tasks must be at least 1");
    }
    if let Some(shape) = args.shapes.iter().find(|s| u64::from(s.maps) > records) {
        bail!(
            "{}x{} needs at least a record per map; --size holds {records}",
            shape.maps,
            shape.partitions,
        );
    }
    let tasks = args.tasks.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let base = args.client.config(config, "shufflebench");
    let store = Store::connect(&base)
        .await
        .with_context(|| format!("cannot reach the namenode at {}", base.namenode))?;
    let hosts = crail_shuffle::advertised_hosts(&store).await?;
    if hosts.is_empty() {
        bail!(
            "no node advertises a shuffle service (start them with `crail node` or `crail cluster`)"
        );
    }
    let bytes = records * RECORD as u64;
    check_room(&store, bytes, (hosts.len() * tasks) as u64, &args).await?;
    let app = format!("shufflebench-{}", std::process::id());
    let mut engines = Vec::new();
    for host in &hosts {
        let (_, node) = store_on(&base, host).await?;
        let client = ShuffleClient::connect_local(node, &app)
            .await
            .with_context(|| format!("cannot reach the shuffle service of {host}"))?;
        engines.push(client);
    }
    let (near, far): (IpAddr, IpAddr) = (hosts[0].parse()?, hosts[1 % hosts.len()].parse()?);
    eprintln!(
        "shufflebench: {} nodes ({}), {tasks} tasks per node, {} per round, generating input",
        hosts.len(),
        hosts.join(" "),
        ByteSize(bytes),
    );
    let mut pool = generate(bytes);
    if !args.json {
        println!(
            "| maps | partitions | map s | reduce s | x first | write MB/s | read MB/s | aggregate MB/s | TCP stream MB/s | % | store held | of it DRAM | held / bytes | segments | record B / segment | engines' peak RSS |"
        );
        println!(
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
    }
    let mut next_id = 0;
    let mut first_secs = None;
    let result = async {
        for &shape in &args.shapes {
            let measured = crail_node::reset_peak_memory();
            let input = partition(std::mem::take(&mut pool), shape);
            let (mut rounds, mut tcp) = (Vec::new(), Vec::new());
            let warmup = if shape == args.shapes[0] {
                args.warmup
            } else {
                0
            };
            for round in 0..warmup + args.rounds {
                let stream =
                    crate::databench::tcp_baseline(near, far, bytes, TCP_BUFFER, true, false)
                        .await
                        .context("the plain TCP stream failed")?;
                let id = ShuffleId::new(app.clone(), next_id);
                next_id += 1;
                let r = shuffle(&store, &engines, &id, shape, &input, &args, tasks).await;
                // Whatever happened, give the space back before the next round.
                let cleanup = engines[0].unregister(&id).await;
                let r = r?;
                cleanup.with_context(|| format!("cannot unregister {id}"))?;
                eprintln!(
                    "shufflebench: {}x{} {}: map {:.2} s, reduce {:.2} s, TCP stream {:.0} MB/s",
                    shape.maps,
                    shape.partitions,
                    if round < warmup {
                        format!("warmup {}/{warmup}", round + 1)
                    } else {
                        format!("round {}/{}", round + 1 - warmup, args.rounds)
                    },
                    r.map_secs,
                    r.reduce_secs,
                    stream
                );
                if round >= warmup {
                    rounds.push(r);
                    tcp.push(stream);
                }
            }
            // Every task is done with it: the pool goes on to the next shape.
            pool = Arc::try_unwrap(input.pool).unwrap_or_else(|shared| shared.as_ref().clone());
            let mut row = summarize(shape, &rounds, &tcp, bytes, hosts.len(), tasks, &args);
            row.times_first = row.secs / first_secs.get_or_insert(row.secs).max(1e-9);
            row.peak_rss_bytes = crail_node::resident_memory("self")
                .map(|(_, peak)| peak)
                .filter(|_| measured);
            if args.json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                println!(
                    "| {} | {} | {:.2} | {:.2} | {:.1}x | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}% | {} | {} | {:.2} | {} | {:.1} | {} |",
                    row.maps,
                    row.partitions,
                    row.map_secs,
                    row.reduce_secs,
                    row.times_first,
                    row.write_mb_per_sec,
                    row.read_mb_per_sec,
                    row.aggregate_mb_per_sec,
                    row.tcp_mb_per_sec,
                    row.ratio * 100.0,
                    ByteSize(row.held_bytes),
                    ByteSize(row.held_dram_bytes),
                    row.held_per_byte,
                    row.segments,
                    row.record_bytes_per_segment,
                    row.peak_rss_bytes
                        .map_or_else(|| "-".to_owned(), |b| ByteSize(b).to_string()),
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = engines[0].remove_app(&app).await;
    result
}

/// A store client on advertised node `host`, as an engine there has: the node's address and
/// the client.
pub(crate) async fn store_on(
    base: &crail_store::ClientConfig,
    host: &str,
) -> anyhow::Result<(IpAddr, Store)> {
    let ip: IpAddr = host
        .parse()
        .with_context(|| format!("advertised host `{host}` is not an address"))?;
    let store = Store::connect(&base.clone().with_local_host(ip))
        .await
        .with_context(|| format!("cannot connect a client from {host}"))?;
    Ok((ip, store))
}

/// Refuses a run the cluster's free space cannot hold, before generating anything.
async fn check_room(store: &Store, bytes: u64, files: u64, args: &Args) -> anyhow::Result<()> {
    let info = store.cluster_info().await?;
    let free: u64 = info
        .datanodes
        .iter()
        .filter(|d| d.alive)
        .map(|d| d.capacity.saturating_sub(d.used))
        .sum();
    // Each group file (a node's slots are not known here; as many as it runs tasks) holds
    // each partition's bytes in extents that double, so up to twice the bytes, plus a first
    // extent per partition and its last block's rest.
    let max_partitions = args.shapes.iter().map(|s| s.partitions).max().unwrap_or(1);
    let per_file = u64::from(max_partitions) * crail_shuffle::MIN_EXTENT + info.block_size;
    let need = (2 * bytes + files * per_file) * u64::from(args.replication);
    if free < need {
        bail!(
            "the cluster has {} free; a round needs about {} (give its nodes more --dram or --flash, or a smaller --size)",
            ByteSize(free),
            ByteSize(need)
        );
    }
    Ok(())
}

/// `bytes` of pseudo-random records (xorshift), pages touched before any clock starts.
pub(crate) fn generate(bytes: u64) -> Vec<u8> {
    let len = usize::try_from(bytes).unwrap_or(usize::MAX);
    let mut pool = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for word in pool.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    pool
}

/// The key range of partition `p` of `partitions`, over keys' first four bytes.
fn key_range(p: u32, partitions: u32) -> (u64, u64) {
    let lo = (u64::from(p) << 32) / u64::from(partitions);
    let hi = ((u64::from(p) + 1) << 32) / u64::from(partitions);
    (lo, hi)
}

fn key_prefix(record: &[u8]) -> u64 {
    let mut k = [0u8; 4];
    k.copy_from_slice(&record[..4]);
    u64::from(u32::from_be_bytes(k))
}

/// Cuts the pool into `shape.maps` map outputs of `shape.partitions` parts each, rewriting each
/// record's key prefix into its part's key range (so reducers can check where records went).
fn partition(mut pool_vec: Vec<u8>, shape: Shape) -> Input {
    let records = pool_vec.len() / RECORD;
    let (maps, parts) = (shape.maps as usize, shape.partitions as usize);
    let mut ranges = Vec::with_capacity(maps);
    let mut expected = vec![0u64; parts];
    let mut at = 0usize;
    // Where the records that do not divide evenly go: the next partitions after the last
    // map's, so a shape with fewer records than segments spreads them over every partition.
    let mut extra_from = 0usize;
    for m in 0..maps {
        let map_records = records / maps + usize::from(m < records % maps);
        let (each, extra) = (map_records / parts, map_records % parts);
        let mut map_ranges = Vec::with_capacity(parts.min(map_records));
        for (p, total) in expected.iter_mut().enumerate() {
            let n = each + usize::from((p + parts - extra_from) % parts < extra);
            if n == 0 {
                continue;
            }
            let range = at * RECORD..(at + n) * RECORD;
            let (lo, hi) = key_range(p as u32, shape.partitions);
            for record in pool_vec[range.clone()].chunks_exact_mut(RECORD) {
                let key = lo + key_prefix(record) % (hi - lo);
                record[..4].copy_from_slice(&(key as u32).to_be_bytes());
            }
            *total += range.len() as u64;
            map_ranges.push((p as u32, range));
            at += n;
        }
        extra_from = (extra_from + extra) % parts;
        ranges.push(map_ranges);
    }
    Input {
        pool: Arc::new(pool_vec),
        ranges: Arc::new(ranges),
        expected: Arc::new(expected),
    }
}

/// One timed round: register, every map, then every reduce; between them (untimed) what the
/// shuffle holds in the store.
async fn shuffle(
    store: &Store,
    engines: &[ShuffleClient],
    id: &ShuffleId,
    shape: Shape,
    input: &Input,
    args: &Args,
    tasks: usize,
) -> anyhow::Result<Round> {
    let meta = Meta::new(shape.maps, shape.partitions, "fixed:10:90").replication(args.replication);
    let before = held(store).await?;
    engines[0].register(id, &meta).await?;
    let start = Instant::now();
    let segments = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let record_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    on_every_node(engines, tasks, shape.maps, |client, m| {
        let (id, pool, ranges) = (id.clone(), input.pool.clone(), input.ranges.clone());
        let (segments, record_bytes) = (segments.clone(), record_bytes.clone());
        async move {
            let mut writer = client.map_writer(&id, m, 0).await?;
            for (p, range) in &ranges[m as usize] {
                writer.write(*p, &pool[range.clone()]).await?;
            }
            let commit = writer.commit().await?;
            let relaxed = std::sync::atomic::Ordering::Relaxed;
            segments.fetch_add(commit.segments().len() as u64, relaxed);
            record_bytes.fetch_add(commit.encode().len() as u64, relaxed);
            anyhow::Ok(())
        }
    })
    .await
    .context("a map task failed")?;
    let map_secs = start.elapsed().as_secs_f64();
    let after = held(store).await?;
    let held = (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    );
    let start = Instant::now();
    let prefetch = args.prefetch;
    on_every_node(engines, tasks, shape.partitions, |client, p| {
        let (id, expected) = (id.clone(), input.expected.clone());
        async move {
            let mut reader = client.read(&id, p..p + 1, None, prefetch).await?;
            let (lo, hi) = key_range(p, shape.partitions);
            let mut got = 0u64;
            // Per map, its bytes so far: a chunk may end inside a record (at a block's end),
            // and the record goes on in the map's next chunk.
            let mut seen: HashMap<u32, u64> = HashMap::new();
            while let Some(chunk) = reader.next_chunk().await? {
                let data = &chunk.data;
                let before = seen.entry(chunk.map).or_default();
                let first = (RECORD - (*before % RECORD as u64) as usize) % RECORD;
                *before += data.len() as u64;
                let in_range = |r: &[u8]| (lo..hi).contains(&key_prefix(r));
                // The first and the last record that begin and end in this chunk.
                let whole = data.len().saturating_sub(first) / RECORD;
                let last = first + whole.saturating_sub(1) * RECORD;
                if whole > 0
                    && !(in_range(&data[first..first + RECORD])
                        && in_range(&data[last..last + RECORD]))
                {
                    bail!(
                        "partition {p}: map {}'s chunk of {} bytes holds records of another partition",
                        chunk.map,
                        data.len()
                    );
                }
                got += data.len() as u64;
            }
            if let Some((map, bytes)) = seen.iter().find(|(_, b)| **b % RECORD as u64 != 0) {
                bail!("partition {p}: map {map} wrote {bytes} bytes, not whole records");
            }
            if got != expected[p as usize] {
                bail!(
                    "partition {p}: read {got} bytes, the maps wrote {}",
                    expected[p as usize]
                );
            }
            anyhow::Ok(())
        }
    })
    .await
    .context("a reduce task failed")?;
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    Ok(Round {
        map_secs,
        segments: segments.load(relaxed),
        record_bytes: record_bytes.load(relaxed),
        reduce_secs: start.elapsed().as_secs_f64(),
        held,
    })
}

/// Bytes in allocated blocks of the live datanodes: all tiers, and DRAM (storage class 0).
async fn held(store: &Store) -> anyhow::Result<(u64, u64)> {
    let info = store.cluster_info().await?;
    Ok(info
        .datanodes
        .iter()
        .filter(|d| d.alive)
        .fold((0, 0), |(all, dram), d| {
            let in_dram = if d.storage_class == 0 { d.used } else { 0 };
            (all + d.used, dram + in_dram)
        }))
}

/// Runs `task(client, i)` for every `i < count`, `i` on node `i % nodes`, `tasks` at a time per
/// node; the first error stops the rest.
async fn on_every_node<F, Fut>(
    engines: &[ShuffleClient],
    tasks: usize,
    count: u32,
    task: F,
) -> anyhow::Result<()>
where
    F: Fn(ShuffleClient, u32) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let nodes = engines.len() as u32;
    let mut set = tokio::task::JoinSet::new();
    let mut queued: Vec<Vec<Fut>> = (0..nodes).map(|_| Vec::new()).collect();
    for i in (0..count).rev() {
        let n = (i % nodes) as usize;
        queued[n].push(task(engines[n].clone(), i));
    }
    for work in queued {
        let work = Arc::new(std::sync::Mutex::new(work));
        for _ in 0..tasks {
            let work = work.clone();
            set.spawn(async move {
                loop {
                    let next = work.lock().ok().and_then(|mut w| w.pop());
                    let Some(fut) = next else {
                        return anyhow::Ok(());
                    };
                    fut.await?;
                }
            });
        }
    }
    while let Some(done) = set.join_next().await {
        if let Err(e) = done.context("a task panicked").and_then(|r| r) {
            set.abort_all();
            return Err(e);
        }
    }
    Ok(())
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

fn summarize(
    shape: Shape,
    rounds: &[Round],
    tcp: &[f64],
    bytes: u64,
    nodes: usize,
    tasks: usize,
    args: &Args,
) -> Row {
    let mb = bytes as f64 / 1e6;
    let map_secs = median(rounds.iter().map(|r| r.map_secs).collect());
    let reduce_secs = median(rounds.iter().map(|r| r.reduce_secs).collect());
    let secs = median(rounds.iter().map(|r| r.map_secs + r.reduce_secs).collect());
    let tcp_mb_per_sec = median(tcp.to_vec());
    let aggregate_mb_per_sec = 2.0 * mb / secs.max(1e-9);
    let held_bytes = rounds.iter().map(|r| r.held.0).max().unwrap_or(0);
    let held_dram_bytes = rounds.iter().map(|r| r.held.1).max().unwrap_or(0);
    Row {
        maps: shape.maps,
        partitions: shape.partitions,
        nodes,
        tasks_per_node: tasks,
        replication: args.replication,
        rounds: rounds.len(),
        bytes,
        map_secs,
        reduce_secs,
        secs,
        write_mb_per_sec: mb / map_secs.max(1e-9),
        read_mb_per_sec: mb / reduce_secs.max(1e-9),
        aggregate_mb_per_sec,
        tcp_mb_per_sec,
        ratio: aggregate_mb_per_sec / tcp_mb_per_sec.max(1e-9),
        times_first: 1.0,
        held_bytes,
        held_dram_bytes,
        held_per_byte: held_bytes as f64 / bytes.max(1) as f64,
        segments: rounds.iter().map(|r| r.segments).max().unwrap_or(0),
        record_bytes_per_segment: rounds
            .iter()
            .map(|r| r.record_bytes as f64 / r.segments.max(1) as f64)
            .fold(0.0, f64::max),
        peak_rss_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_bad_ones_say_why() {
        assert_eq!(
            "64x32".parse::<Shape>(),
            Ok(Shape {
                maps: 64,
                partitions: 32
            })
        );
        assert!(
            "64".parse::<Shape>()
                .unwrap_err()
                .contains("MAPSxPARTITIONS")
        );
        assert!("0x3".parse::<Shape>().unwrap_err().contains("at least 1"));
    }

    #[test]
    fn every_record_lands_in_its_partition_once() {
        let pool = generate(1000 * RECORD as u64);
        let shape = Shape {
            maps: 7,
            partitions: 5,
        };
        let input = partition(pool, shape);
        assert_eq!(input.expected.iter().sum::<u64>(), 1000 * RECORD as u64);
        for map in input.ranges.iter() {
            for (p, range) in map {
                let (lo, hi) = key_range(*p, shape.partitions);
                for r in input.pool[range.clone()].chunks_exact(RECORD) {
                    assert!((lo..hi).contains(&key_prefix(r)));
                }
            }
        }
        // Fewer records than segments: every partition still gets some, none twice per map.
        let wide = Shape {
            maps: 50,
            partitions: 300,
        };
        let input = partition(generate(1000 * RECORD as u64), wide);
        assert!(
            input.expected.iter().all(|&b| b > 0),
            "{:?}",
            input.expected
        );
        for map in input.ranges.iter() {
            assert_eq!(map.len(), 20);
        }
    }
}
