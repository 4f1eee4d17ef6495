//! `crail broadcastbench`: a broadcast variable read on every node of a running cluster,
//! against a single source.
//!
//! Each round, a writer on the first node writes `--size` bytes twice:
//!
//! - as a broadcast variable, through its node's broadcast service (striped over every
//!   datanode); then `--readers` engines on each node read it through their node's service,
//!   which fetches it from the store once and streams it to its readers as it arrives;
//! - as a plain file from the same node (its blocks on that node's datanodes: the one
//!   source); then as many readers on each node read it straight from the store, each on its
//!   own: every reader fetches the whole value from the node that wrote it.
//!
//! A read is timed from the first reader's start to the last reader's last byte, after the
//! value is written; the order of the two alternates between rounds and figures are medians.
//! Readers count bytes and compute a crc32c, checked against the value's.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use crail_broadcast::{BroadcastClient, VarId};
use crail_store::{ByteSize, CreateOptions, Store};
use serde::Serialize;

use crate::shufflebench::{generate, median, store_on};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    client: crate::ClientArgs,
    /// The value's size.
    #[arg(long, default_value = "1GiB")]
    size: ByteSize,
    /// Readers on each node.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Rounds; figures are medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Untimed rounds first, to warm connections, buffer pools and the datanodes' memory.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The medians of a run.
#[derive(Debug, Serialize)]
struct Row {
    nodes: usize,
    readers_per_node: usize,
    rounds: usize,
    bytes: u64,
    /// Through the node services: the read, and the put before it.
    broadcast_secs: f64,
    broadcast_put_secs: f64,
    /// Bytes the nodes fetched from the store (once per node).
    broadcast_store_bytes: u64,
    /// Of those, bytes from another node's datanode.
    broadcast_remote_bytes: u64,
    /// Every reader straight from the writer's node.
    single_source_secs: f64,
    single_source_put_secs: f64,
    single_source_store_bytes: u64,
    single_source_remote_bytes: u64,
    /// Single-source time over broadcast time.
    speedup: f64,
}

/// One way's round: put and read time, bytes read from datanodes, and of those from another
/// node's.
#[derive(Debug, Clone, Copy)]
struct Round {
    put_secs: f64,
    read_secs: f64,
    store_bytes: u64,
    remote_bytes: u64,
}

/// An engine on a node: its store client and its broadcast client.
struct Engine {
    host: IpAddr,
    store: Store,
    broadcast: BroadcastClient,
}

pub(crate) async fn run(args: Args, config: crail_store::Config) -> anyhow::Result<()> {
    if args.size.bytes() == 0 {
        bail!("--size must be above 0");
    }
    if args.readers == 0 || args.rounds == 0 {
        bail!("--readers and --rounds must be at least 1");
    }
    let base = args.client.config(config, "broadcastbench");
    let store = Store::connect(&base)
        .await
        .with_context(|| format!("cannot reach the namenode at {}", base.namenode))?;
    let hosts = crail_broadcast::advertised_hosts(&store).await?;
    if hosts.is_empty() {
        bail!(
            "no node advertises a broadcast service (start them with `crail node` or `crail cluster`)"
        );
    }
    let bytes = args.size.bytes();
    let info = store.cluster_info().await?;
    let free_on = |host: IpAddr| -> u64 {
        info.datanodes
            .iter()
            .filter(|d| d.alive && d.host == host)
            .map(|d| d.capacity.saturating_sub(d.used))
            .sum()
    };
    let free: u64 = info
        .datanodes
        .iter()
        .filter(|d| d.alive)
        .map(|d| d.capacity.saturating_sub(d.used))
        .sum();
    let first: IpAddr = hosts[0]
        .parse()
        .with_context(|| format!("advertised host `{}` is not an address", hosts[0]))?;
    // Both values are held at once only if a round fails half-way; one at a time otherwise,
    // the single source's all on the first node.
    if free < bytes + info.block_size * hosts.len() as u64 || free_on(first) < bytes {
        bail!(
            "the cluster has {} free, {} of it on {first}; a round needs {} on {first} (give its nodes more --dram, or a smaller --size)",
            ByteSize(free),
            ByteSize(free_on(first)),
            ByteSize(bytes)
        );
    }
    let app = format!("broadcastbench-{}", std::process::id());
    let mut engines = Vec::new();
    for host in &hosts {
        let (ip, node) = store_on(&base, host).await?;
        let broadcast = BroadcastClient::connect_local(&node, &app)
            .await
            .with_context(|| format!("cannot reach the broadcast service of {host}"))?;
        engines.push(Engine {
            host: ip,
            store: node,
            broadcast,
        });
    }
    eprintln!(
        "broadcastbench: {} nodes ({}), {} readers per node, a {} value, generating it",
        hosts.len(),
        hosts.join(" "),
        args.readers,
        ByteSize(bytes),
    );
    let value = Arc::new(generate(bytes));
    let crc = crc32c::crc32c(&value);
    let engines = Arc::new(engines);
    let (mut ours, mut single) = (Vec::new(), Vec::new());
    let result = async {
        for round in 0..args.warmup + args.rounds {
            let name = format!("r{round}");
            let (b, s) = if round % 2 == 0 {
                let b = broadcast_round(&engines, &app, &name, &value, crc, args.readers).await?;
                let s = single_round(&engines, &app, &name, &value, crc, args.readers).await?;
                (b, s)
            } else {
                let s = single_round(&engines, &app, &name, &value, crc, args.readers).await?;
                let b = broadcast_round(&engines, &app, &name, &value, crc, args.readers).await?;
                (b, s)
            };
            eprintln!(
                "broadcastbench: {}: broadcast read {:.2} s (put {:.2} s), single source read {:.2} s (write {:.2} s)",
                if round < args.warmup {
                    format!("warmup {}/{}", round + 1, args.warmup)
                } else {
                    format!("round {}/{}", round + 1 - args.warmup, args.rounds)
                },
                b.read_secs,
                b.put_secs,
                s.read_secs,
                s.put_secs
            );
            if round >= args.warmup {
                ours.push(b);
                single.push(s);
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = engines[0].broadcast.remove_app(&app).await;
    let _ = engines[0].store.delete(&format!("/{app}"), true).await;
    result?;
    let med = |rounds: &[Round], f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let row = Row {
        nodes: engines.len(),
        readers_per_node: args.readers,
        rounds: args.rounds,
        bytes,
        broadcast_secs: med(&ours, |r| r.read_secs),
        broadcast_put_secs: med(&ours, |r| r.put_secs),
        broadcast_store_bytes: ours[0].store_bytes,
        broadcast_remote_bytes: ours[0].remote_bytes,
        single_source_secs: med(&single, |r| r.read_secs),
        single_source_put_secs: med(&single, |r| r.put_secs),
        single_source_store_bytes: single[0].store_bytes,
        single_source_remote_bytes: single[0].remote_bytes,
        speedup: med(&single, |r| r.read_secs) / med(&ours, |r| r.read_secs).max(1e-9),
    };
    if args.json {
        println!("{}", serde_json::to_string(&row)?);
    } else {
        let readers = row.nodes * row.readers_per_node;
        let gb = |b: u64| b as f64 / 1e9;
        let rate = |secs: f64| (readers as u64 * bytes) as f64 / 1e6 / secs.max(1e-9);
        println!(
            "| way | read s | delivered MB/s | read from datanodes GB | of it across nodes GB | put s |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        println!(
            "| broadcast service, {} nodes x {} readers | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
            row.nodes,
            row.readers_per_node,
            row.broadcast_secs,
            rate(row.broadcast_secs),
            gb(row.broadcast_store_bytes),
            gb(row.broadcast_remote_bytes),
            row.broadcast_put_secs
        );
        println!(
            "| single source, {readers} readers | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
            row.single_source_secs,
            rate(row.single_source_secs),
            gb(row.single_source_store_bytes),
            gb(row.single_source_remote_bytes),
            row.single_source_put_secs
        );
        println!(
            "\nbroadcast reads {:.2}x as fast as a single source ({} of {}, medians over {} rounds)",
            row.speedup,
            ByteSize(bytes),
            ByteSize(bytes),
            row.rounds
        );
    }
    Ok(())
}

/// Bytes read from datanodes when each of `readers` (a host each) reads a value of `bytes`
/// whose blocks are on `hosts_of_blocks`, and of those, bytes from another host's.
fn moved(hosts_of_blocks: &BTreeMap<IpAddr, u64>, readers: &[IpAddr], bytes: u64) -> (u64, u64) {
    let blocks: u64 = hosts_of_blocks.values().sum::<u64>().max(1);
    let mut remote = 0;
    for reader in readers {
        let local = hosts_of_blocks.get(reader).copied().unwrap_or(0);
        remote += bytes * (blocks - local) / blocks;
    }
    (bytes * readers.len() as u64, remote)
}

/// The hosts holding the blocks of the file or value at `path`, with their block counts.
async fn block_hosts(
    store: &Store,
    path: &str,
    value: bool,
) -> anyhow::Result<BTreeMap<IpAddr, u64>> {
    let locations = if value {
        let value = store.get(path).await?;
        let blocks = value.size().div_ceil(store.block_size());
        value.block_locations(0, blocks).await?
    } else {
        store
            .lookup(path)
            .await?
            .into_file()?
            .all_block_locations()
            .await?
    };
    let mut out = BTreeMap::new();
    for l in locations {
        *out.entry(l.host).or_default() += 1;
    }
    Ok(out)
}

/// Puts the value as a broadcast variable from the first node, reads it on every node
/// through the services, destroys it.
async fn broadcast_round(
    engines: &Arc<Vec<Engine>>,
    app: &str,
    name: &str,
    value: &Arc<Vec<u8>>,
    crc: u32,
    readers: usize,
) -> anyhow::Result<Round> {
    let var = VarId::new(app, name);
    let writer = &engines[0];
    let started = Instant::now();
    writer.broadcast.put(&var, value).await?;
    let put_secs = started.elapsed().as_secs_f64();
    let hosts = block_hosts(
        &writer.store,
        &format!("{}/{app}/{name}", crail_broadcast::ROOT),
        true,
    )
    .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for engine in engines.iter() {
        for _ in 0..readers {
            let (client, var) = (engine.broadcast.clone(), var.clone());
            tasks.push(tokio::spawn(async move {
                let mut reader = client.get(&var, Duration::from_secs(10)).await?;
                let (mut len, mut crc) = (0u64, 0u32);
                while let Some(chunk) = reader.next_chunk().await? {
                    len += chunk.len() as u64;
                    crc = crc32c::crc32c_append(crc, &chunk);
                }
                anyhow::Ok((len, crc))
            }));
        }
    }
    for task in tasks {
        check(task.await??, value.len() as u64, crc, "a broadcast reader")?;
    }
    let read_secs = started.elapsed().as_secs_f64();
    let nodes: Vec<IpAddr> = engines.iter().map(|e| e.host).collect();
    let (store_bytes, remote_bytes) = moved(&hosts, &nodes, value.len() as u64);
    writer.broadcast.destroy(&var).await?;
    Ok(Round {
        put_secs,
        read_secs,
        store_bytes,
        remote_bytes,
    })
}

/// Writes the value as a plain file from the first node, reads it straight from the store
/// with every reader, deletes it.
async fn single_round(
    engines: &Arc<Vec<Engine>>,
    app: &str,
    name: &str,
    value: &Arc<Vec<u8>>,
    crc: u32,
    readers: usize,
) -> anyhow::Result<Round> {
    let writer = &engines[0];
    let dir = format!("/{app}");
    match writer
        .store
        .create_dir(&dir, &CreateOptions::default())
        .await
    {
        Ok(_) | Err(crail_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let path = format!("{dir}/{name}");
    let started = Instant::now();
    writer
        .store
        .write_file(&path, value, &CreateOptions::default())
        .await?;
    let put_secs = started.elapsed().as_secs_f64();
    let hosts = block_hosts(&writer.store, &path, false).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut reading = Vec::new();
    for engine in engines.iter() {
        for _ in 0..readers {
            reading.push(engine.host);
            let (store, path) = (engine.store.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let mut reader = store.lookup(&path).await?.into_file()?.reader();
                let (mut len, mut crc) = (0u64, 0u32);
                while let Some(chunk) = reader.next_buffer().await? {
                    len += chunk.len() as u64;
                    crc = crc32c::crc32c_append(crc, &chunk);
                }
                anyhow::Ok((len, crc))
            }));
        }
    }
    for task in tasks {
        check(
            task.await??,
            value.len() as u64,
            crc,
            "a single-source reader",
        )?;
    }
    let read_secs = started.elapsed().as_secs_f64();
    let (store_bytes, remote_bytes) = moved(&hosts, &reading, value.len() as u64);
    writer.store.delete(&path, false).await?;
    Ok(Round {
        put_secs,
        read_secs,
        store_bytes,
        remote_bytes,
    })
}

fn check((len, got): (u64, u32), size: u64, crc: u32, who: &str) -> anyhow::Result<()> {
    if len != size || got != crc {
        bail!("{who} read {len} bytes with crc32c {got:08x}; the value is {size} bytes, {crc:08x}");
    }
    Ok(())
}
