//! `terasort`: generate, sort and validate TeraSort data on crail-rs; `terasort run` does all
//! three on an embedded cluster and reports. The work is the library's; this is its command
//! line and its progress bars.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use crail_store::{ByteSize, Tiering};
use indicatif::{ProgressBar, ProgressStyle};
use terasort::run::{self, RunPlan, rate};
use terasort::sort::SortOptions;
use terasort::{Result, Summary, gensort};

#[derive(Debug, Parser)]
#[command(
    name = "terasort",
    version,
    about = "TeraSort on crail-rs: gensort-compatible input, a sort through the shuffle service, valsort's checks",
    after_help = "A cluster to `terasort sort --config FILE` on: `crail cluster --config-out FILE`."
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
    Run(RunArgs),
}

fn main() -> ExitCode {
    // The embedded cluster of `terasort run` starts its nodes by running this binary again.
    if let Some(code) = crail_node::child_main() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first, without its own prefix or the usage that follows.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            eprintln!(
                "terasort: error: {} (terasort --help)",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
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
    let result = runtime.block_on(command(cli.command));
    runtime.shutdown_background();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            let text = e.to_string();
            eprintln!(
                "terasort: error: {}",
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; `Ok(false)`: it ran and found the output invalid.
async fn command(command: Command) -> Result<bool> {
    let bars = Bars { json: false };
    match command {
        Command::Gen {
            size,
            out,
            parts,
            start,
        } => {
            let records = run::records_of(size)?;
            let clock = Instant::now();
            let progress = run::Reporter::phase(&bars, "gen", records * terasort::RECORD as u64);
            let made = tokio::task::spawn_blocking(move || {
                gensort::generate(&out, start, records, parts, |n| progress.advance(n))
            })
            .await
            .map_err(|e| terasort::Error::Cluster(e.to_string()))??;
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
            let engines = run::engines_of(&run::client_config(&config)?, None).await?;
            let options = SortOptions {
                partitions,
                tasks,
                shuffle: 0,
            };
            let report = run::sort_reported(&engines, &input, &out, &options, &bars).await;
            for engine in &engines {
                let _ = engine.end_application().await;
            }
            let report = report?;
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
        Command::Validate { dir, input, json } => validate(&dir, input.as_deref(), json).await,
        Command::Run(args) => {
            let bars = Bars { json: args.json };
            let report = run::run(&args.plan(), &bars).await?;
            if args.json {
                println!("{}", report.json());
            }
            Ok(report.verdict.is_ok())
        }
    }
}

async fn validate(dir: &Path, input: Option<&Path>, json: bool) -> Result<bool> {
    let bars = Bars { json };
    let summary = run::validate_reported(dir, &bars).await?;
    let input = match input {
        Some(input) => Some(run::validate_reported(input, &bars).await?),
        None => None,
    };
    let verdict = run::verdict(&summary, input.as_ref());
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

fn print_summary(summary: &Summary) {
    println!("Records: {}", summary.records);
    println!("Checksum: {}", summary.checksum);
    println!("Duplicate keys: {}", summary.duplicates);
}

/// Progress bars on stderr (hidden when not a terminal); report lines on stdout, or on
/// stderr when stdout is for the JSON line.
struct Bars {
    json: bool,
}

impl run::Reporter for Bars {
    fn line(&self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    fn phase(&self, name: &str, total: u64) -> Box<dyn run::Progress> {
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{prefix:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Box::new(Bar(bar))
    }
}

/// A bar cleared when its phase ends.
struct Bar(ProgressBar);

impl run::Progress for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Bytes of input, e.g. 4GiB.
    #[arg(long)]
    size: ByteSize,
    /// Nodes of the embedded cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u8,
    /// DRAM per node of the embedded cluster [default: room for the shuffle, less --flash].
    #[arg(long)]
    dram: Option<ByteSize>,
    /// Flash per node of the embedded cluster, in files under the work directory, e.g. 4GiB:
    /// the shuffle continues there when DRAM is full.
    #[arg(long, default_value = "0", conflicts_with = "config")]
    flash: ByteSize,
    /// Where a node's blocks go when its DRAM is full: class-first (other nodes' DRAM, then
    /// flash) or host-first (its own flash, then other nodes).
    #[arg(long, default_value = "class-first", conflicts_with = "config")]
    tiering: Tiering,
    /// TLS on every TCP connection of the embedded cluster (a throwaway certificate
    /// authority made for it), to measure what encryption costs.
    #[arg(long, conflicts_with = "config")]
    tls: bool,
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

impl RunArgs {
    fn plan(&self) -> RunPlan {
        RunPlan {
            size: self.size,
            nodes: self.nodes,
            dram: self.dram,
            flash: self.flash,
            tiering: self.tiering,
            tls: self.tls,
            config: self.config.clone(),
            work: self.work.clone(),
            keep: self.keep,
            chart: self.chart.clone(),
            options: SortOptions {
                partitions: self.partitions,
                tasks: self.tasks,
                shuffle: 0,
            },
        }
    }
}
