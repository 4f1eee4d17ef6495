//! Word count through crail-rs: a broadcast list of words to skip, map tasks that write
//! (word, 1) records to a shuffle, and reduce tasks that read their partitions sorted and
//! combined.
//!
//! ```text
//! crail cluster --config-out /tmp/crail.toml &
//! cargo run -p crail-sdk --example wordcount -- /tmp/crail.toml [NODE]
//! ```
//!
//! NODE is the address of the node the engine runs on (default 127.0.0.2, the embedded
//! cluster's first).

use std::collections::HashSet;
use std::net::IpAddr;

use crail_sdk::{Config, Crail};

const TEXT: [&str; 3] = [
    "the quick brown fox jumps over the lazy dog",
    "the dog sleeps and the fox runs",
    "a fox a dog a day",
];
const PARTITIONS: u32 = 4;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wordcount: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(config) = args.next() else {
        return Err("usage: wordcount CLIENT_CONFIG [NODE] (CLIENT_CONFIG from `crail cluster --config-out`)".into());
    };
    let node: IpAddr = args.next().as_deref().unwrap_or("127.0.0.2").parse()?;
    let config = Config::from_file(&config)?;
    let app = format!("wordcount-{}", std::process::id());
    let crail = Crail::connect_on(&config.client, node, &app).await?;
    println!("connected to the node {} as {app}", crail.host());

    // The driver: a shuffle of one map per line, and the words to skip for every task.
    let shuffle = crail
        .register_shuffle(0, TEXT.len() as u32, PARTITIONS, "kv")
        .await?;
    crail.put_broadcast("skip", b"the a and").await?;

    // Map tasks.
    for (map, line) in TEXT.iter().enumerate() {
        let skip = crail.read_broadcast("skip").await?;
        let skip: HashSet<&[u8]> = skip.split(|b| *b == b' ').collect();
        let mut out = shuffle.map_writer(map as u32, 0).await?;
        for word in line.split(' ').filter(|w| !skip.contains(w.as_bytes())) {
            let partition = u32::from(word.as_bytes()[0]) % PARTITIONS;
            out.write(partition, word.as_bytes(), &1u64.to_be_bytes())
                .await?;
        }
        let status = out.commit().await?;
        println!("map {map}: {:?} bytes per partition", status.bytes);
    }

    // Reduce tasks.
    for partition in 0..PARTITIONS {
        let mut records = shuffle
            .reader(partition..partition + 1)
            .combine(|_word, count, one| {
                let sum = u64_of(count) + u64_of(one);
                count.clear();
                count.extend_from_slice(&sum.to_be_bytes());
            })
            .open()
            .await?;
        while let Some(record) = records.next_record().await? {
            println!(
                "{}\t{}",
                String::from_utf8_lossy(record.key),
                u64_of(record.value)
            );
        }
    }
    crail.end_application().await?;
    Ok(())
}

fn u64_of(bytes: &[u8]) -> u64 {
    let mut be = [0u8; 8];
    let n = bytes.len().min(8);
    be[8 - n..].copy_from_slice(&bytes[..n]);
    u64::from_be_bytes(be)
}
