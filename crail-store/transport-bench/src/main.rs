//! Framed RPC against tonic (gRPC over HTTP/2) for namenode lookups, same run, same namespace.
//!
//! Both servers run in one process on a 2-thread runtime and answer through the same dispatch
//! code on one shared namespace; the tonic service carries the request body unchanged. The
//! clients run on a second 2-thread runtime. So the only difference measured is the transport.
//!
//! Run: `cargo run --release -p crail-transport-bench [-- OPS]`

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use crail_store::namenode::SharedCore;
use crail_store::{ClientConfig, CreateOptions, NamenodeConfig, NodeType, Store};
use tonic::{Request, Response, Status};

mod pb {
    #![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("crail.bench.v1");
}

use pb::raw_namenode_client::RawNamenodeClient;
use pb::raw_namenode_server::{RawNamenode, RawNamenodeServer};

const LOOKUP_KIND: u16 = 17;
const FILES: usize = 1000;

#[derive(Debug)]
struct RawService {
    core: SharedCore,
}

#[tonic::async_trait]
impl RawNamenode for RawService {
    async fn call(
        &self,
        request: Request<pb::RawRequest>,
    ) -> Result<Response<pb::RawReply>, Status> {
        let peer = request
            .remote_addr()
            .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
        let raw = request.into_inner();
        let kind = u16::try_from(raw.kind).map_err(|_| Status::invalid_argument("kind"))?;
        let (kind, flags, body) = self.core.dispatch(kind, raw.body, peer);
        Ok(Response::new(pb::RawReply {
            kind: u32::from(kind),
            flags: u32::from(flags),
            body,
        }))
    }
}

/// One measured configuration.
#[derive(Debug)]
struct Figures {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn figures(mut latencies: Vec<f64>, seconds: f64) -> Figures {
    latencies.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        ops_per_sec: latencies.len() as f64 / seconds,
        p50_us: at(0.5),
        p99_us: at(0.99),
    }
}

fn lookup_body(i: usize) -> Bytes {
    Bytes::from(crail_store::testing::lookup_body(
        format!("/bench/f{}", i % FILES).as_bytes(),
    ))
}

/// Runs `ops` operations from `in_flight` sequential tasks per connection and times each.
async fn measure<C, F, Fut>(
    connections: Vec<C>,
    in_flight: usize,
    ops: usize,
    op: F,
) -> anyhow::Result<Figures>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let tasks_total = connections.len() * in_flight;
    let per_task = ops / tasks_total;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_total {
        let (conn, op) = (connections[t % connections.len()].clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let t0 = Instant::now();
                op(conn.clone(), t + i).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::with_capacity(ops);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(figures(all, start.elapsed().as_secs_f64()))
}

async fn framed(
    addr: SocketAddr,
    clients: usize,
    in_flight: usize,
    ops: usize,
) -> anyhow::Result<Figures> {
    let mut stores = Vec::new();
    for _ in 0..clients {
        stores.push(Store::connect(&ClientConfig::for_namenode(addr)).await?);
    }
    measure(stores, in_flight, ops, |store: Store, i| async move {
        store.stat(&format!("/bench/f{}", i % FILES)).await?;
        Ok(())
    })
    .await
}

async fn tonic(
    addr: SocketAddr,
    clients: usize,
    in_flight: usize,
    ops: usize,
) -> anyhow::Result<Figures> {
    let mut channels = Vec::new();
    for _ in 0..clients {
        channels.push(RawNamenodeClient::connect(format!("http://{addr}")).await?);
    }
    measure(channels, in_flight, ops, |mut client, i| async move {
        let reply = client
            .call(pb::RawRequest {
                kind: u32::from(LOOKUP_KIND),
                body: lookup_body(i),
            })
            .await?
            .into_inner();
        anyhow::ensure!(reply.flags & 2 == 0, "lookup failed");
        Ok(())
    })
    .await
}

fn main() -> anyhow::Result<()> {
    let ops: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("OPS must be a number")?
        .unwrap_or(200_000);
    let config = NamenodeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..NamenodeConfig::default()
    };
    let core = SharedCore::new(config)?;

    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let (framed_addr, tonic_addr) = servers.block_on(async {
        let framed_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let tonic_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addrs = (framed_listener.local_addr()?, tonic_listener.local_addr()?);
        let framed_core = core.clone();
        tokio::spawn(async move {
            framed_core
                .serve(framed_listener, std::future::pending())
                .await
        });
        let incoming =
            tonic::transport::server::TcpIncoming::from(tonic_listener).with_nodelay(Some(true));
        let service = RawNamenodeServer::new(RawService { core: core.clone() });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        Ok::<_, anyhow::Error>(addrs)
    })?;

    clients.block_on(async {
        let store = Store::connect(&ClientConfig::for_namenode(framed_addr)).await?;
        store
            .create_dir("/bench", &CreateOptions::default())
            .await?;
        for i in 0..FILES {
            store
                .create(
                    &format!("/bench/f{i}"),
                    NodeType::File,
                    &CreateOptions::default(),
                )
                .await?;
        }
        let shapes: [(&str, usize, usize); 3] = [
            ("1 client, 1 in flight", 1, 1),
            ("16 clients, 1 in flight each", 16, 1),
            ("4 clients, 8 in flight each", 4, 8),
        ];
        println!("namenode lookups, {ops} per row, both servers on one shared namespace");
        println!(
            "{:<30} {:>10} {:>12} {:>9} {:>9}",
            "clients", "transport", "ops/s", "p50 us", "p99 us"
        );
        for (label, c, o) in shapes {
            // Warm both paths, then measure each.
            framed(framed_addr, c, o, ops / 10).await?;
            tonic(tonic_addr, c, o, ops / 10).await?;
            let f = framed(framed_addr, c, o, ops).await?;
            let t = tonic(tonic_addr, c, o, ops).await?;
            for (name, x) in [("framed", &f), ("tonic", &t)] {
                println!(
                    "{label:<30} {name:>10} {:>12.0} {:>9.1} {:>9.1}",
                    x.ops_per_sec, x.p50_us, x.p99_us
                );
            }
            println!(
                "{:<30} {:>10} {:>11.1}x {:>8.1}x",
                "",
                "framed/tonic",
                f.ops_per_sec / t.ops_per_sec,
                t.p50_us / f.p50_us
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
