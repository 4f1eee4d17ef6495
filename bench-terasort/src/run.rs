//! `terasort run`: gen, the in-memory baseline, the sort on a cluster (an embedded one, or the
//! running one a client configuration names) and validate, timed phase by phase and charted.
//! The caller shows progress and lines through a [`Reporter`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crail_sdk::Crail;
use crail_sdk::crail_store::{ByteSize, ClientConfig, Config, Store, Tiering};

use crate::local::LocalReport;
use crate::sort::{Phase, SortOptions, SortReport};
use crate::{Error, RECORD, Result, Summary, chart, gensort, local, validate};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Bytes of input (whole records).
    pub size: ByteSize,
    /// Nodes of the embedded cluster.
    pub nodes: u8,
    /// DRAM per node of the embedded cluster; `None`: room for the shuffle (less the flash).
    pub dram: Option<ByteSize>,
    /// Flash per node of the embedded cluster (0: none), in files under the work directory.
    pub flash: ByteSize,
    /// Where blocks go when a node's DRAM is full (the namenode's `tiering`).
    pub tiering: Tiering,
    /// TLS on every TCP connection of the embedded cluster.
    pub tls: bool,
    /// A running cluster's client configuration file, instead of an embedded cluster.
    pub config: Option<PathBuf>,
    /// Work directory for input and output (created; removed unless `keep`); `None`: a new
    /// one under the temporary directory.
    pub work: Option<PathBuf>,
    /// Keep the work directory.
    pub keep: bool,
    /// Where to write the chart (SVG).
    pub chart: PathBuf,
    /// The sort's partitions and tasks.
    pub options: SortOptions,
}

/// How a run shows itself: lines as phases end, progress within them.
pub trait Reporter: Sync {
    /// A line of the report.
    fn line(&self, text: &str);
    /// Progress of phase `name` over `total` bytes, until the returned value is dropped.
    fn phase(&self, name: &str, total: u64) -> Box<dyn Progress>;
}

/// The progress of one phase.
pub trait Progress: Send + Sync {
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
}

/// What a run measured.
#[derive(Debug)]
pub struct RunReport {
    /// Bytes sorted.
    pub bytes: u64,
    /// Seconds of gen.
    pub gen_secs: f64,
    /// The in-memory baseline.
    pub local: LocalReport,
    /// The sort on the cluster.
    pub sort: SortReport,
    /// Seconds of validate.
    pub validate_secs: f64,
    /// What validate found.
    pub summary: Summary,
    /// `Err(why)` when the output is not the input sorted.
    pub verdict: std::result::Result<(), String>,
}

impl RunReport {
    /// The report as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        let (bytes, sort, local) = (self.bytes, &self.sort, &self.local);
        serde_json::json!({
            "gb_per_sec": bytes as f64 / sort.secs() / 1e9,
            "records": self.summary.records,
            "valid": self.verdict.is_ok(),
            "seconds": sort.secs(),
            "bytes": bytes,
            "nodes": sort.nodes,
            "maps": sort.maps,
            "partitions": sort.partitions,
            "phases": {
                "gen": self.gen_secs,
                "sample": sort.sample_secs,
                "map": sort.map_secs,
                "reduce": sort.reduce_secs,
                "validate": self.validate_secs,
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
            "checksum": self.summary.checksum,
        })
    }
}

/// `bytes` over `secs` as GB/s.
pub fn rate(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.2} GB/s", bytes as f64 / secs / 1e9)
}

/// Whole records in `size`; none is an error naming the flag.
pub fn records_of(size: ByteSize) -> Result<u64> {
    let records = size.bytes() / RECORD as u64;
    if records == 0 {
        return Err(Error::Invalid(format!(
            "--size {size} holds no 100-byte record"
        )));
    }
    Ok(records)
}

/// The verdict on sorted output, given what the input held.
pub fn verdict(output: &Summary, input: Option<&Summary>) -> std::result::Result<(), String> {
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

/// Reads a cluster's client configuration file.
pub fn client_config(file: &Path) -> Result<ClientConfig> {
    Config::from_file(file)
        .map(|c| c.client)
        .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", file.display())))
}

/// One engine per node: the nodes whose shuffle service advertised itself, or `hosts`.
pub async fn engines_of(client: &ClientConfig, hosts: Option<Vec<IpAddr>>) -> Result<Vec<Crail>> {
    let hosts = match hosts {
        Some(hosts) => hosts,
        None => {
            let store = Store::connect(client)
                .await
                .map_err(crail_sdk::Error::from)?;
            let advertised = crail_sdk::crail_shuffle::advertised_hosts(&store)
                .await
                .map_err(crail_sdk::Error::from)?;
            let hosts: Vec<IpAddr> = advertised.iter().filter_map(|h| h.parse().ok()).collect();
            if hosts.is_empty() {
                return Err(Error::Cluster(
                    "the cluster has no node with a shuffle service".into(),
                ));
            }
            hosts
        }
    };
    let app = format!("terasort-{}", std::process::id());
    let mut engines = Vec::new();
    for host in hosts {
        engines.push(Crail::connect_on(client, host, &app).await?);
    }
    Ok(engines)
}

/// The sort on `engines`, its map and reduce progress shown.
pub async fn sort_reported(
    engines: &[Crail],
    input: &Path,
    output: &Path,
    options: &SortOptions,
    reporter: &dyn Reporter,
) -> Result<SortReport> {
    let total: u64 = crate::parts(input)?.iter().map(|(_, s)| s).sum();
    let map = reporter.phase("map", total);
    let reduce = reporter.phase("reduce", total);
    crate::sort::sort(
        engines,
        input,
        output,
        options,
        move |phase, n| match phase {
            Phase::Map => map.advance(n),
            Phase::Reduce => reduce.advance(n),
        },
    )
    .await
}

/// Validates `dir`, its progress shown.
pub async fn validate_reported(dir: &Path, reporter: &dyn Reporter) -> Result<Summary> {
    let total: u64 = crate::parts(dir)?.iter().map(|(_, s)| s).sum();
    let progress = reporter.phase("validate", total);
    let dir = dir.to_owned();
    blocking(move || validate::validate_with(&dir, |n| progress.advance(n))).await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Cluster(format!("a worker thread failed: {e}")))?
}

/// MemAvailable of /proc/meminfo, if it says.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Writes every dirty page back (untimed; returns its seconds), so the kernel's background
/// writeback of one phase's files does not compete with the next timed phase for the disk and
/// the CPUs.
async fn settle() -> f64 {
    let clock = Instant::now();
    let _ = tokio::task::spawn_blocking(rustix::fs::sync).await;
    clock.elapsed().as_secs_f64()
}

/// Runs `plan`: its work directory made (and removed unless kept), every phase reported.
pub async fn run(plan: &RunPlan, reporter: &dyn Reporter) -> Result<RunReport> {
    let records = records_of(plan.size)?;
    let max = crail_node::MAX_NODES;
    if plan.config.is_none() && !(1..=max).contains(&plan.nodes) {
        return Err(Error::Invalid(format!(
            "--nodes must be between 1 and {max}"
        )));
    }
    let bytes = records * RECORD as u64;
    // The baseline holds the input twice; the embedded cluster's DRAM, a quarter more than
    // the input, comes after it.
    let needed = 2 * bytes + (512 << 20);
    if let Some(available) = available_memory()
        && available < needed
    {
        return Err(Error::Invalid(format!(
            "--size {} needs about {} of memory (the in-memory baseline holds the input twice); {} is available: try a smaller --size",
            plan.size,
            ByteSize(needed),
            ByteSize(available)
        )));
    }
    let work = plan
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("terasort-{}", std::process::id())));
    std::fs::create_dir(&work).map_err(|cause| {
        Error::Invalid(format!(
            "cannot create the work directory {}: {cause}",
            work.display()
        ))
    })?;
    let outcome = run_in(plan, &work, records, reporter).await;
    if !plan.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

async fn run_in(
    plan: &RunPlan,
    work: &Path,
    records: u64,
    reporter: &dyn Reporter,
) -> Result<RunReport> {
    let bytes = records * RECORD as u64;
    let (input, output, baseline) = (
        work.join("input"),
        work.join("output"),
        work.join("baseline"),
    );
    reporter.line(&format!(
        "terasort run: {} ({records} records), work directory {}",
        plan.size,
        work.display()
    ));

    // Gen.
    let clock = Instant::now();
    let progress = reporter.phase("gen", bytes);
    let dir = input.clone();
    let made = blocking(move || gensort::generate(&dir, 0, records, None, |n| progress.advance(n)))
        .await?;
    let gen_secs = clock.elapsed().as_secs_f64();
    let settle_secs = settle().await;
    reporter.line(&format!(
        "gen: {} parts in {gen_secs:.2} s ({}) (written back to disk before the next phase: {settle_secs:.2} s)",
        made.parts,
        rate(bytes, gen_secs)
    ));

    // The baseline: the same data sorted in memory in this process.
    let progress = reporter.phase("in-memory", bytes);
    let (from, to) = (input.clone(), baseline.clone());
    let local = blocking(move || local::sort(&from, &to)).await?;
    drop(progress);
    let _ = std::fs::remove_dir_all(&baseline);
    settle().await;
    reporter.line(&format!(
        "in-memory sort, one process: {:.2} s ({}): read {:.2} s, sort {:.2} s, write {:.2} s (its memory faulted in before: {:.2} s)",
        local.secs(),
        rate(bytes, local.secs()),
        local.read_secs,
        local.sort_secs,
        local.write_secs,
        local.prepare_secs
    ));

    let sort = sort_on_cluster(plan, bytes, work, &input, &output, reporter).await?;
    reporter.line(&format!(
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
    let summary = validate_reported(&output, reporter).await?;
    let validate_secs = clock.elapsed().as_secs_f64();
    let input_summary = Summary {
        records: made.records,
        checksum: made.checksum.clone(),
        duplicates: 0,
        unordered: 0,
        first_unordered: None,
    };
    let verdict = verdict(&summary, Some(&input_summary));
    reporter.line(&format!(
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
    let report = RunReport {
        bytes,
        gen_secs,
        local,
        sort,
        validate_secs,
        summary,
        verdict,
    };
    write_chart(plan, &report)?;
    reporter.line(&format!(
        "sort: {} ({:.2}x the in-memory sort's {}); chart: {}",
        rate(bytes, report.sort.secs()),
        report.local.secs() / report.sort.secs(),
        rate(bytes, report.local.secs()),
        plan.chart.display()
    ));
    Ok(report)
}

/// The sort on the cluster `plan` names, or on an embedded one started (and stopped) here.
async fn sort_on_cluster(
    plan: &RunPlan,
    bytes: u64,
    work: &Path,
    input: &Path,
    output: &Path,
    reporter: &dyn Reporter,
) -> Result<SortReport> {
    if let Some(file) = &plan.config {
        let engines = engines_of(&client_config(file)?, None).await?;
        let sorted = sort_reported(&engines, input, output, &plan.options, reporter).await;
        end(&engines).await;
        return sorted;
    }
    // Room for the shuffle's copy of the input, a quarter more, over the nodes (less what
    // their flash holds).
    let nodes = u64::from(plan.nodes.max(1));
    let dram = plan.dram.unwrap_or_else(|| {
        let per_node = (bytes * 5 / 4 / nodes).saturating_sub(plan.flash.bytes());
        ByteSize((per_node.div_ceil(256 << 20) * (256 << 20)).max(512 << 20))
    });
    let mut cluster_config = crail_node::ClusterConfig::new(plan.nodes, dram);
    if plan.flash.bytes() > 0 {
        let dir = work.join("flash");
        std::fs::create_dir_all(&dir)
            .map_err(|cause| Error::Invalid(format!("cannot create {}: {cause}", dir.display())))?;
        cluster_config.flash = plan.flash;
        cluster_config.flash_dir = Some(dir);
    }
    let mut config = Config::default();
    config.namenode.tiering = plan.tiering;
    if plan.tls {
        let dir = work.join("tls");
        std::fs::create_dir_all(&dir)
            .map_err(|cause| Error::Invalid(format!("cannot create {}: {cause}", dir.display())))?;
        crail_node::pki::turn_on(&dir, &cluster_config, &mut config, false)
            .map_err(|e| Error::Cluster(format!("cannot turn TLS on: {e}")))?;
    }
    let mut cluster = crail_node::Embedded::start(&cluster_config, &config)
        .await
        .map_err(|e| Error::Cluster(format!("cannot start the embedded cluster: {e}")))?;
    let hosts = cluster.hosts();
    let flash = match plan.flash.bytes() {
        0 => String::new(),
        _ => format!(" + {} flash ({})", plan.flash, plan.tiering),
    };
    reporter.line(&format!(
        "cluster: {} nodes ({}), {dram} dram{flash} each, namenode {}",
        plan.nodes,
        hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        cluster.namenode()
    ));
    let sorted = match engines_of(&cluster.client_config(), Some(hosts)).await {
        Ok(engines) => {
            let sorted = tokio::select! {
                sorted = sort_reported(&engines, input, output, &plan.options, reporter) => sorted,
                (host, status) = cluster.node_died() => {
                    let _ = std::fs::remove_dir_all(output);
                    Err(Error::Cluster(format!("node {host} died mid-sort ({status})")))
                }
            };
            end(&engines).await;
            sorted
        }
        Err(e) => Err(e),
    };
    reporter.line(&format!(
        "cluster peak resident memory: {}",
        cluster.peak_memory()
    ));
    let _ = cluster.stop().await;
    sorted
}

/// Ends the application on every engine (its shuffles go).
async fn end(engines: &[Crail]) {
    for engine in engines {
        let _ = engine.end_application().await;
    }
}

fn write_chart(plan: &RunPlan, report: &RunReport) -> Result<()> {
    let (sort, bytes) = (&report.sort, report.bytes);
    let bars = [
        ("gen", report.gen_secs),
        ("in-memory sort (baseline)", report.local.secs()),
        ("sort: sample", sort.sample_secs),
        ("sort: map (shuffle write)", sort.map_secs),
        ("sort: reduce (read, sort, write)", sort.reduce_secs),
        ("sort: total", sort.secs()),
        ("validate", report.validate_secs),
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
        report.local.secs() / sort.secs()
    );
    std::fs::write(&plan.chart, chart::svg(&title, &bars)).map_err(|cause| Error::Io {
        path: plan.chart.clone(),
        cause,
    })
}
