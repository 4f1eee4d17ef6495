//! `crail status`: the datanodes the namenode knows, live and dead.

use crail_store::{ByteSize, Config};

use crate::table::Table;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    client: crate::ClientArgs,
    /// Print exact byte counts instead of binary units.
    #[arg(short = 'b', long)]
    bytes: bool,
}

pub(crate) async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let namenode = args.client.config(config.clone(), "crail status").namenode;
    let store = args.client.connect(config, "crail status").await?;
    let info = store.cluster_info().await?;
    let alive = info.datanodes.iter().filter(|d| d.alive).count();
    let hosts: std::collections::BTreeSet<_> = info
        .datanodes
        .iter()
        .filter(|d| d.alive)
        .map(|d| d.host)
        .collect();
    println!(
        "namenode {namenode}: block size {}, {} hosts, {alive} datanodes alive, {} dead, {} files",
        ByteSize(info.block_size),
        hosts.len(),
        info.datanodes.len() - alive,
        info.files
    );
    let size = |n: u64| {
        if args.bytes {
            n.to_string()
        } else {
            ByteSize(n).to_string()
        }
    };
    let mut table = Table::new(&[
        "id",
        "host",
        "address",
        "tier",
        "class",
        "capacity",
        "used",
        "use%",
        "heartbeat",
        "state",
    ]);
    let mut datanodes = info.datanodes;
    datanodes.sort_by_key(|d| (d.host, d.storage_class, d.id));
    for d in datanodes {
        let percent = if d.capacity == 0 {
            "-".into()
        } else {
            format!("{:.1}%", d.used as f64 * 100.0 / d.capacity as f64)
        };
        table.row(vec![
            d.id.0.to_string(),
            d.host.to_string(),
            d.address.to_string(),
            d.tier,
            d.storage_class.to_string(),
            size(d.capacity),
            size(d.used),
            percent,
            format!("{:.1}s ago", d.last_heartbeat.as_secs_f64()),
            if d.alive { "alive" } else { "dead" }.into(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}
