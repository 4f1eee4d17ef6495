//! `crail iobench`: metadata micro-benchmarks against a running namenode, after Crail's iobench.
//!
//! `-k` operations in total are split across `-c` clients (one connection each) with `-o`
//! operations in flight per client. Every operation's latency is recorded; the summary gives
//! throughput and percentiles. Setup and cleanup are not timed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use crail_store::{ClientConfig, CreateOptions, Store, WriteLease};
use serde::Serialize;
use tokio::sync::Barrier;

use crate::iotests::{Test, quantile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Namenode address, overriding the configuration.
    #[arg(long)]
    namenode: Option<String>,
    /// The operation to measure.
    #[arg(short = 't', long = "test")]
    test: Test,
    /// Operations in total (split across clients); for write/read tests, how many rounds of
    /// the test and its plain TCP baselines run, alternating (figures are medians over them)
    /// [default: 100000 operations, 10000 for readRandom, 1 round for the sequential tests].
    #[arg(short = 'k', long = "count")]
    count: Option<u64>,
    /// Clients, each with its own connection.
    #[arg(short = 'c', long = "clients", default_value_t = 1)]
    clients: u64,
    /// Operations in flight per client (1: each client waits for every reply).
    #[arg(short = 'o', long = "outstanding", default_value_t = 1)]
    outstanding: u64,
    /// Data tests: file size.
    #[arg(short = 's', long = "size", default_value = "1GiB")]
    size: crail_store::ByteSize,
    /// Data tests: bytes per operation (at most a block).
    #[arg(short = 'b', long = "buffer", default_value = "1MiB")]
    buffer: crail_store::ByteSize,
    /// Data tests: put the file in this storage class only (0 dram, 1 flash by default).
    #[arg(long)]
    storage_class: Option<u32>,
    /// Entries in the directory listDir lists.
    #[arg(long, default_value_t = 100)]
    entries: u64,
    /// Operations run before timing starts, per task, to warm connections and caches.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Metadata tests: leave what the test made in the store (under /iobench-*), e.g. to
    /// time a namenode's restart over a namespace of that size.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    test: Test,
    ops: u64,
    clients: u64,
    outstanding: u64,
    seconds: f64,
    ops_per_sec: f64,
    mean_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

pub(crate) async fn run(args: Args, config: crail_store::Config) -> anyhow::Result<()> {
    let count = args.count.unwrap_or(match args.test {
        Test::Write | Test::WriteAsync | Test::Read | Test::ReadAsync => 1,
        Test::ReadRandom => 10_000,
        _ => 100_000,
    });
    if count == 0 || args.clients == 0 || args.outstanding == 0 {
        bail!("-k, -c and -o must be at least 1");
    }
    let mut config: ClientConfig = config.client;
    if let Some(namenode) = &args.namenode {
        config.namenode = namenode.clone();
    }
    config.name = "crail iobench".into();
    if matches!(
        args.test,
        Test::Write | Test::WriteAsync | Test::Read | Test::ReadAsync | Test::ReadRandom
    ) {
        let params = crate::databench::Params {
            test: args.test,
            size: args.size.bytes(),
            buffer: usize::try_from(args.buffer.bytes())?,
            count,
            outstanding: usize::try_from(args.outstanding)?,
            storage_class: args.storage_class,
            json: args.json,
        };
        return crate::databench::run(config, params).await;
    }
    let mut stores = Vec::new();
    for _ in 0..args.clients {
        stores.push(
            Store::connect(&config)
                .await
                .with_context(|| format!("cannot reach the namenode at {}", config.namenode))?,
        );
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let base = format!("/iobench-{}-{nanos}", std::process::id());
    let admin = &stores[0];
    admin.create_dir(&base, &CreateOptions::default()).await?;
    let tasks = args.clients * args.outstanding;
    let per_task: Vec<u64> = (0..tasks)
        .map(|t| count / tasks + u64::from(t < count % tasks))
        .collect();
    setup(admin, &base, &args, &per_task).await?;

    let barrier = Arc::new(Barrier::new(usize::try_from(tasks)? + 1));
    let mut handles = Vec::new();
    for (t, ops) in per_task.iter().copied().enumerate() {
        let store = stores[t % stores.len()].clone();
        let (base, barrier, test) = (base.clone(), barrier.clone(), args.test);
        let (warmup, entries) = (args.warmup, args.entries);
        handles.push(tokio::spawn(async move {
            worker(store, test, base, t, ops, warmup, entries, barrier).await
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(usize::try_from(count)?);
    let mut leases = Vec::new();
    for handle in handles {
        let (task_latencies, task_leases) = handle.await??;
        latencies.extend(task_latencies);
        leases.extend(task_leases);
    }
    let elapsed = start.elapsed();
    // Untimed: give back the write leases createFile took, then remove everything.
    release(leases).await?;
    if !args.keep {
        admin.delete(&base, true).await?;
    }

    let summary = summarize(&args, elapsed, &mut latencies);
    println!(
        "{:?}: {} ops, {} client(s) x {} outstanding, {:.3} s, {:.0} ops/s, mean {:.1} us, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
        summary.test,
        summary.ops,
        summary.clients,
        summary.outstanding,
        summary.seconds,
        summary.ops_per_sec,
        summary.mean_us,
        summary.p50_us,
        summary.p99_us,
        summary.p999_us
    );
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Files each lookup task cycles through.
fn lookup_files(warmup: u64) -> u64 {
    warmup.clamp(1, 1000)
}

fn task_dir(base: &str, task: usize) -> String {
    format!("{base}/t{task}")
}

/// Untimed preparation: per-task directories, and the files lookup, delete and list need.
async fn setup(store: &Store, base: &str, args: &Args, per_task: &[u64]) -> anyhow::Result<()> {
    let options = CreateOptions::default();
    for (task, ops) in per_task.iter().enumerate() {
        let dir = task_dir(base, task);
        store.create_dir(&dir, &options).await?;
        let files = match args.test {
            Test::CreateFile => 0,
            Test::LookupFile => lookup_files(args.warmup),
            Test::DeleteFile => ops + args.warmup,
            Test::ListDir => u64::from(task == 0) * args.entries,
            _ => 0,
        };
        create_files(store, &dir, files).await?;
    }
    Ok(())
}

/// Aborts write leases, up to 256 requests in flight.
async fn release(leases: Vec<WriteLease>) -> anyhow::Result<()> {
    // A lease that expired during a long run is given back already.
    let given_back = |done: crail_store::Result<()>| match done {
        Ok(()) | Err(crail_store::Error::LeaseLost { .. }) => Ok(()),
        Err(e) => Err(e),
    };
    let mut in_flight = tokio::task::JoinSet::new();
    for lease in leases {
        if in_flight.len() >= 256
            && let Some(done) = in_flight.join_next().await
        {
            given_back(done?)?;
        }
        in_flight.spawn(lease.abort());
    }
    while let Some(done) = in_flight.join_next().await {
        given_back(done?)?;
    }
    Ok(())
}

/// Creates `count` empty files `dir/f<i>`, up to 256 requests in flight.
async fn create_files(store: &Store, dir: &str, count: u64) -> anyhow::Result<()> {
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..count {
        if in_flight.len() >= 256
            && let Some(done) = in_flight.join_next().await
        {
            done??;
        }
        let store = store.clone();
        let path = format!("{dir}/f{i}");
        in_flight.spawn(async move {
            store
                .create(
                    &path,
                    crail_store::NodeType::File,
                    &CreateOptions::default(),
                )
                .await
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    store: Store,
    test: Test,
    base: String,
    task: usize,
    ops: u64,
    warmup: u64,
    entries: u64,
    barrier: Arc<Barrier>,
) -> anyhow::Result<(Vec<f64>, Vec<WriteLease>)> {
    let dir = task_dir(&base, task);
    let options = CreateOptions::default();
    let lookup_files = lookup_files(warmup);
    let list_dir = task_dir(&base, 0);
    // A create returns the file's write lease; keeping it until the end keeps its release out
    // of the measurement (dropping it would send one in the background).
    let op = |i: u64, timed: bool| {
        let (store, dir, list_dir, options) = (&store, &dir, &list_dir, &options);
        async move {
            let mut lease = None;
            match test {
                Test::CreateFile => {
                    let tag = if timed { "f" } else { "w" };
                    lease = Some(
                        store
                            .create_file(&format!("{dir}/{tag}{i}"), options)
                            .await?,
                    );
                }
                Test::LookupFile => {
                    store.stat(&format!("{dir}/f{}", i % lookup_files)).await?;
                }
                Test::DeleteFile => {
                    let n = if timed { i + warmup } else { i };
                    store.delete(&format!("{dir}/f{n}"), false).await?;
                }
                Test::ListDir => {
                    let (page, _) = store.list_page(list_dir, "", 0).await?;
                    if page.len() as u64 != entries.min(1000) {
                        bail!("listed {} entries, expected {entries}", page.len());
                    }
                }
                _ => bail!("{test:?} is a data test"),
            }
            Ok::<_, anyhow::Error>(lease)
        }
    };
    let mut leases = Vec::new();
    for i in 0..warmup {
        leases.extend(op(i, false).await?);
    }
    barrier.wait().await;
    let mut latencies = Vec::with_capacity(usize::try_from(ops)?);
    for i in 0..ops {
        let start = Instant::now();
        let lease = op(i, true).await?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
        leases.extend(lease);
    }
    Ok((latencies, leases))
}

fn summarize(args: &Args, elapsed: Duration, latencies: &mut [f64]) -> Summary {
    latencies.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| quantile(latencies, q);
    let seconds = elapsed.as_secs_f64();
    Summary {
        test: args.test,
        ops: latencies.len() as u64,
        clients: args.clients,
        outstanding: args.outstanding,
        seconds,
        ops_per_sec: latencies.len() as f64 / seconds.max(1e-9),
        mean_us: latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: latencies.last().copied().unwrap_or(0.0),
    }
}
