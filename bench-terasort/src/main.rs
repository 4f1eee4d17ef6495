//! `terasort`: generate, sort and validate TeraSort data on crail-rs; `terasort run` does all
//! three on an embedded cluster and reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use crail_sdk::Crail;
use crail_store::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};
use terasort::sort::{Phase, SortOptions, SortReport};
use terasort::{Summary, chart, gensort, local, validate};

#[derive(Debug, Parser)]
#[command(
    name = "terasort",
    version,
    about = "TeraSort on crail-rs: gensort-compatible input, a sort through the shuffle service, valsort's checks",
    after_help = "`terasort cluster ...` runs `crail cluster ...` (a cluster on this machine, e.g. \
                  --config-out FILE for `terasort sort --config FILE`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write SIZE of input, byte for byte as `gensort` writes it, in parts made in parallel.
    Gen {
        /// Bytes of input (whole 100-byte records), e.g. 4GiB.
        #[arg(long)]
        size: ByteSize,
        /// Directory to create for the parts.
        #[arg(long)]
        out: PathBuf,
        /// Parts [default: one per 128 MiB].
        #[arg(long)]
        parts: Option<usize>,
        /// Number of the first record (gensort's -b).
        #[arg(long, default_value_t = 0)]
        start: u64,
    },
    /// Sort the parts of --in into --out through the shuffle service of a running cluster.
    Sort {
        /// Input directory (from `terasort gen`).
        #[arg(long = "in")]
        input: PathBuf,
        /// Output directory to create.
        #[arg(long)]
        out: PathBuf,
        /// Client configuration of the cluster (`crail cluster --config-out FILE`).
        #[arg(long, env = "CRAIL_CONF")]
        config: PathBuf,
        /// Reduce partitions [default: one per 128 MiB, at least two per node].
        #[arg(long)]
        partitions: Option<u32>,
        /// Tasks at a time per node.
        #[arg(long, default_value_t = 1)]
        tasks: usize,
    },
    /// Check what valsort checks: order within and across parts, records, duplicates and the
    /// checksum; with --input, that the records and checksum are the input's.
    Validate {
        /// Directory of sorted parts.
        dir: PathBuf,
        /// The input it was sorted from.
        #[arg(long)]
        input: Option<PathBuf>,
        /// The summary as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Generate, sort and validate on an embedded cluster (or the one --config names), next
    /// to an in-memory sort of the same data in this process; report and chart the phases.
    Run(RunPlan),
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The embedded cluster starts its nodes by running this binary again; `terasort cluster
    // ...` is `crail cluster ...`, for a cluster of one's own to `terasort sort` on.
    if crail_cli::is_node_command(&args) || args.get(1).is_some_and(|a| a == "cluster") {
        return crail_cli::main_with(args);
    }
    let cli: Cli = match crail_cli::parse_args("terasort", &args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("terasort: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    runtime.shutdown_background();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!(
                "terasort: error: {}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; `Ok(false)`: it ran and found the output invalid.
async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Gen {
            size,
            out,
            parts,
            start,
        } => {
            let records = records_of(size)?;
            let bar = bar("gen", records * terasort::RECORD as u64);
            let clock = Instant::now();
            let progress = bar.clone();
            let made = tokio::task::spawn_blocking(move || {
                gensort::generate(&out, start, records, parts, |n| progress.inc(n))
            })
            .await??;
            bar.finish_and_clear();
            println!(
                "generated {} records in {} parts in {:.2} s ({}), checksum {}",
                made.records,
                made.parts,
                clock.elapsed().as_secs_f64(),
                rate(made.records * 100, clock.elapsed().as_secs_f64()),
                made.checksum
            );
            Ok(true)
        }
        Command::Sort {
            input,
            out,
            config,
            partitions,
            tasks,
        } => {
            let config = crail_store::Config::from_file(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let engines = engines_of(&config.client, None).await?;
            let options = SortOptions {
                partitions,
                tasks,
                shuffle: 0,
            };
            let report = sort_with_bars(&engines, &input, &out, &options).await?;
            for engine in &engines {
                let _ = engine.end_application().await;
            }
            println!(
                "sorted {} records on {} nodes in {:.2} s ({}): sample {:.2} s, map {:.2} s, reduce {:.2} s",
                report.records,
                report.nodes,
                report.secs(),
                rate(report.bytes, report.secs()),
                report.sample_secs,
                report.map_secs,
                report.reduce_secs
            );
            Ok(true)
        }
        Command::Validate { dir, input, json } => {
            let summary = validate_with_bar(&dir).await?;
            let input = match input {
                Some(input) => Some(validate_with_bar(&input).await?),
                None => None,
            };
            let verdict = verdict(&summary, input.as_ref());
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "records": summary.records,
                        "checksum": summary.checksum,
                        "duplicates": summary.duplicates,
                        "unordered": summary.unordered,
                        "valid": verdict.is_ok(),
                    })
                );
            } else {
                print_summary(&summary);
            }
            match verdict {
                Ok(()) => {
                    if !json {
                        println!("SUCCESS - all records are in order");
                    }
                    Ok(true)
                }
                Err(why) => {
                    eprintln!("terasort: INVALID: {why}");
                    Ok(false)
                }
            }
        }
        Command::Run(plan) => run_all(plan).await,
    }
}

fn records_of(size: ByteSize) -> anyhow::Result<u64> {
    let records = size.bytes() / terasort::RECORD as u64;
    if records == 0 {
        bail!("--size {size} holds no 100-byte record");
    }
    Ok(records)
}

/// The verdict on sorted output, given what the input held.
fn verdict(output: &Summary, input: Option<&Summary>) -> Result<(), String> {
    if let Some((part, at)) = &output.first_unordered {
        return Err(format!(
            "{} records out of order, the first at record {at} of {part}",
            output.unordered
        ));
    }
    if let Some(input) = input {
        if input.records != output.records {
            return Err(format!(
                "{} records, the input has {}",
                output.records, input.records
            ));
        }
        if input.checksum != output.checksum {
            return Err(format!(
                "checksum {}, the input's is {}: records were lost, duplicated or changed",
                output.checksum, input.checksum
            ));
        }
    }
    Ok(())
}

fn print_summary(summary: &Summary) {
    println!("Records: {}", summary.records);
    println!("Checksum: {}", summary.checksum);
    println!("Duplicate keys: {}", summary.duplicates);
}

/// A progress bar for `total` bytes of phase `what` (on stderr; hidden when not a terminal).
fn bar(what: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{prefix:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(what.to_owned());
    bar
}

fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.2} GB/s", bytes as f64 / secs / 1e9)
}

/// One engine per node: the nodes whose shuffle service advertised itself, or `hosts`.
async fn engines_of(
    client: &crail_store::ClientConfig,
    hosts: Option<Vec<std::net::IpAddr>>,
) -> anyhow::Result<Vec<Crail>> {
    let hosts = match hosts {
        Some(hosts) => hosts,
        None => {
            let store = crail_store::Store::connect(client)
                .await
                .with_context(|| format!("cannot reach the namenode at {}", client.namenode))?;
            let advertised = crail_sdk::crail_shuffle::service::advertised_hosts(&store).await?;
            let hosts: Vec<std::net::IpAddr> =
                advertised.iter().filter_map(|h| h.parse().ok()).collect();
            if hosts.is_empty() {
                bail!("the cluster has no node with a shuffle service");
            }
            hosts
        }
    };
    let app = format!("terasort-{}", std::process::id());
    let mut engines = Vec::new();
    for host in hosts {
        engines.push(
            Crail::connect_on(client, host, &app)
                .await
                .with_context(|| format!("cannot connect to node {host}"))?,
        );
    }
    Ok(engines)
}

async fn sort_with_bars(
    engines: &[Crail],
    input: &Path,
    output: &Path,
    options: &SortOptions,
) -> anyhow::Result<SortReport> {
    let total: u64 = terasort::parts(input)?.iter().map(|(_, s)| s).sum();
    let bars = indicatif::MultiProgress::new();
    let map = bars.add(bar("map", total));
    let reduce = bars.add(bar("reduce", total));
    let (m, r) = (map.clone(), reduce.clone());
    let report = terasort::sort::sort(
        engines,
        input,
        output,
        options,
        move |phase, n| match phase {
            Phase::Map => m.inc(n),
            Phase::Reduce => r.inc(n),
        },
    )
    .await;
    map.finish_and_clear();
    reduce.finish_and_clear();
    Ok(report?)
}

async fn validate_with_bar(dir: &Path) -> anyhow::Result<Summary> {
    let total: u64 = terasort::parts(dir)?.iter().map(|(_, s)| s).sum();
    let bar = bar("validate", total);
    let (progress, dir) = (bar.clone(), dir.to_owned());
    let summary =
        tokio::task::spawn_blocking(move || validate::validate_with(&dir, |n| progress.inc(n)))
            .await??;
    bar.finish_and_clear();
    Ok(summary)
}

/// MemAvailable of /proc/meminfo, if it says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(Debug, clap::Args)]
struct RunPlan {
    /// Bytes of input, e.g. 4GiB.
    #[arg(long)]
    size: ByteSize,
    /// Nodes of the embedded cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// DRAM per node of the embedded cluster [default: room for the shuffle].
    #[arg(long)]
    dram: Option<ByteSize>,
    /// Use the running cluster this client configuration names instead.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Work directory for input and output (created, removed at the end)
    /// [default: a new one under the temporary directory].
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the work directory.
    #[arg(long)]
    keep: bool,
    /// Where to write the chart of the phases (SVG).
    #[arg(long, default_value = "terasort-run.svg")]
    chart: PathBuf,
    /// Reduce partitions [default: one per 128 MiB, at least two per node].
    #[arg(long)]
    partitions: Option<u32>,
    /// Tasks at a time per node (on this 2-core machine 1 was fastest: 6.3 s for 4 GiB against
    /// 7.2 s with 2 and 6.9 s with 3).
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    /// End with one JSON line: gb_per_sec, records, valid, seconds, and the phases.
    #[arg(long)]
    json: bool,
}

impl RunPlan {
    fn options(&self) -> SortOptions {
        SortOptions {
            partitions: self.partitions,
            tasks: self.tasks,
            shuffle: 0,
        }
    }
}

/// Writes every dirty page back (untimed; returns its seconds), so the kernel's background
/// writeback of one phase's files does not compete with the next timed phase for the disk and
/// the CPUs.
async fn settle() -> f64 {
    let clock = Instant::now();
    let _ = tokio::task::spawn_blocking(rustix::fs::sync).await;
    clock.elapsed().as_secs_f64()
}

/// `terasort run`: gen, the in-memory baseline, the sort on the cluster, validate.
async fn run_all(plan: RunPlan) -> anyhow::Result<bool> {
    let records = records_of(plan.size)?;
    let bytes = records * terasort::RECORD as u64;
    // The baseline holds the input twice; the embedded cluster's DRAM, a quarter more than
    // the input, comes after it.
    let needed = 2 * bytes + (512 << 20);
    if let Some(available) = available_memory()
        && available < needed
    {
        bail!(
            "--size {} needs about {} of memory (the in-memory baseline holds the input twice); {} is available: try a smaller --size",
            plan.size,
            ByteSize(needed),
            ByteSize(available)
        );
    }
    let work = match &plan.work {
        Some(dir) => {
            std::fs::create_dir(dir)
                .with_context(|| format!("cannot create the work directory {}", dir.display()))?;
            dir.clone()
        }
        None => {
            let dir = std::env::temp_dir().join(format!("terasort-{}", std::process::id()));
            std::fs::create_dir(&dir)
                .with_context(|| format!("cannot create the work directory {}", dir.display()))?;
            dir
        }
    };
    let outcome = run_in(&plan, &work, records, bytes).await;
    if !plan.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

async fn run_in(plan: &RunPlan, work: &Path, records: u64, bytes: u64) -> anyhow::Result<bool> {
    let (input, output, baseline) = (
        work.join("input"),
        work.join("output"),
        work.join("baseline"),
    );
    let say = |line: String| {
        if plan.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "terasort run: {} ({records} records), work directory {}",
        plan.size,
        work.display()
    ));

    // Gen.
    let gen_bar = bar("gen", bytes);
    let clock = Instant::now();
    let (progress, dir) = (gen_bar.clone(), input.clone());
    let made = tokio::task::spawn_blocking(move || {
        gensort::generate(&dir, 0, records, None, |n| progress.inc(n))
    })
    .await??;
    gen_bar.finish_and_clear();
    let gen_secs = clock.elapsed().as_secs_f64();
    let settle_secs = settle().await;
    say(format!(
        "gen: {} parts in {gen_secs:.2} s ({}) (written back to disk before the next phase: {settle_secs:.2} s)",
        made.parts,
        rate(bytes, gen_secs)
    ));

    // The baseline: the same data sorted in memory in this process.
    let base_bar = bar("in-memory", bytes);
    base_bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let (from, to) = (input.clone(), baseline.clone());
    let local = tokio::task::spawn_blocking(move || local::sort(&from, &to)).await??;
    base_bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&baseline);
    settle().await;
    say(format!(
        "in-memory sort, one process: {:.2} s ({}): read {:.2} s, sort {:.2} s, write {:.2} s (its memory faulted in before: {:.2} s)",
        local.secs(),
        rate(bytes, local.secs()),
        local.read_secs,
        local.sort_secs,
        local.write_secs,
        local.prepare_secs
    ));

    // The cluster.
    let mut cluster = None;
    let engines = match &plan.config {
        Some(config) => {
            let config = crail_store::Config::from_file(config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            engines_of(&config.client, None).await?
        }
        None => {
            // Room for the shuffle's copy of the input, a quarter more, over the nodes.
            let dram = plan.dram.map_or_else(
                || {
                    let per_node = bytes * 5 / 4 / u64::from(plan.nodes.max(1));
                    (per_node.div_ceil(256 << 20) * (256 << 20)).max(512 << 20)
                },
                ByteSize::bytes,
            );
            let nodes = plan.nodes.to_string();
            let dram = ByteSize(dram).to_string();
            let config = crail_store::Config::default();
            let started =
                crail_cli::cluster::Embedded::start(&["--nodes", &nodes, "--dram", &dram], &config)
                    .await
                    .context("cannot start the embedded cluster")?;
            say(format!(
                "cluster: {} nodes ({}), {dram} dram each, namenode {}",
                nodes,
                started
                    .hosts()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                started.namenode()
            ));
            let client = started.client_config();
            let hosts = started.hosts();
            cluster = Some(started);
            engines_of(&client, Some(hosts)).await?
        }
    };
    let options = plan.options();
    let sorted = match cluster.as_mut() {
        Some(c) => {
            tokio::select! {
                sorted = sort_with_bars(&engines, &input, &output, &options) => sorted,
                (host, status) = c.node_died() => {
                    let _ = std::fs::remove_dir_all(&output);
                    Err(anyhow::anyhow!("node {host} died mid-sort ({status})"))
                }
            }
        }
        None => sort_with_bars(&engines, &input, &output, &options).await,
    };
    for engine in &engines {
        let _ = engine.end_application().await;
    }
    drop(engines);
    if let Some(c) = cluster {
        let _ = c.stop().await;
    }
    let sort = sorted?;
    say(format!(
        "sort on {} nodes: {:.2} s ({}): sample {:.2} s, map {:.2} s ({}), reduce {:.2} s ({}); {} maps, {} partitions (task buffers faulted in before: {:.2} s)",
        sort.nodes,
        sort.secs(),
        rate(bytes, sort.secs()),
        sort.sample_secs,
        sort.map_secs,
        rate(bytes, sort.map_secs),
        sort.reduce_secs,
        rate(bytes, sort.reduce_secs),
        sort.maps,
        sort.partitions,
        sort.prepare_secs
    ));

    // Validate.
    let clock = Instant::now();
    let summary = validate_with_bar(&output).await?;
    let validate_secs = clock.elapsed().as_secs_f64();
    let input_summary = Summary {
        records: made.records,
        checksum: made.checksum.clone(),
        duplicates: 0,
        unordered: 0,
        first_unordered: None,
    };
    let verdict = verdict(&summary, Some(&input_summary));
    say(format!(
        "validate: {:.2} s ({}): {} records, checksum {}, {} duplicate keys: {}",
        validate_secs,
        rate(bytes, validate_secs),
        summary.records,
        summary.checksum,
        summary.duplicates,
        match &verdict {
            Ok(()) => "SUCCESS, all in order, the input's records".to_owned(),
            Err(why) => format!("INVALID: {why}"),
        }
    ));

    let bars = [
        ("gen", gen_secs),
        ("in-memory sort (baseline)", local.secs()),
        ("sort: sample", sort.sample_secs),
        ("sort: map (shuffle write)", sort.map_secs),
        ("sort: reduce (read, sort, write)", sort.reduce_secs),
        ("sort: total", sort.secs()),
        ("validate", validate_secs),
    ]
    .map(|(label, secs)| chart::Bar {
        label: label.into(),
        secs,
        bytes,
    });
    let title = format!(
        "terasort run {} on {} nodes: {} end to end, {:.2}x the in-memory sort",
        plan.size,
        sort.nodes,
        rate(bytes, sort.secs()),
        local.secs() / sort.secs()
    );
    std::fs::write(&plan.chart, chart::svg(&title, &bars))
        .with_context(|| format!("cannot write the chart {}", plan.chart.display()))?;
    say(format!(
        "sort: {} ({:.2}x the in-memory sort's {}); chart: {}",
        rate(bytes, sort.secs()),
        local.secs() / sort.secs(),
        rate(bytes, local.secs()),
        plan.chart.display()
    ));
    if plan.json {
        println!(
            "{}",
            serde_json::json!({
                "gb_per_sec": bytes as f64 / sort.secs() / 1e9,
                "records": summary.records,
                "valid": verdict.is_ok(),
                "seconds": sort.secs(),
                "bytes": bytes,
                "nodes": sort.nodes,
                "maps": sort.maps,
                "partitions": sort.partitions,
                "phases": {
                    "gen": gen_secs,
                    "sample": sort.sample_secs,
                    "map": sort.map_secs,
                    "reduce": sort.reduce_secs,
                    "validate": validate_secs,
                    "prepare_untimed": sort.prepare_secs,
                },
                "baseline": {
                    "seconds": local.secs(),
                    "gb_per_sec": bytes as f64 / local.secs() / 1e9,
                    "read": local.read_secs,
                    "sort": local.sort_secs,
                    "write": local.write_secs,
                    "prepare_untimed": local.prepare_secs,
                },
                "vs_baseline": local.secs() / sort.secs(),
                "checksum": summary.checksum,
            })
        );
    }
    Ok(verdict.is_ok())
}
