//! `crail-sortbench`: sorter and serializer figures on this machine, each against a baseline
//! measured in the same run.
//!
//! - sorting `--records` TeraSort-shaped records (10-byte random key, 90-byte value) with each
//!   sorter, against rayon's `par_sort_unstable_by` on the same records;
//! - fixed-length encode and decode on one core;
//! - lz4 framing: compress and decompress throughput and ratio.
//!
//! `--json` prints one JSON object as the last line.

use std::time::Instant;

use anyhow::bail;
use clap::Parser;
use crail_serializers::{Fixed, Serializer};
use crail_sorters::{by_name, sort_fixed_in_place};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "crail-sortbench", about = "Sorter and serializer benchmarks")]
struct Args {
    /// Records to sort (100 bytes each).
    #[arg(long, default_value_t = 10_000_000)]
    records: usize,
    /// Sorters to time, comma-separated.
    #[arg(long, default_value = "radix,radsort,comparison")]
    sorters: String,
    /// Rounds of the baseline and every sorter, alternating; figures are medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Keys share their first this many bits, as a reduce's of a range-partitioned sort do
    /// (5: one of 32 partitions); 0: keys over the whole range.
    #[arg(long, default_value_t = 0)]
    key_bits: u32,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

const KEY: usize = 10;
const RECORD: usize = 100;

#[derive(Debug, Serialize)]
struct SortFigure {
    sorter: String,
    seconds: f64,
    mb_per_sec: f64,
    speedup_vs_baseline: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    records: usize,
    bytes: usize,
    threads: usize,
    rounds: usize,
    baseline: &'static str,
    baseline_seconds: f64,
    sorts: Vec<SortFigure>,
    fixed_encode_gb_per_sec: f64,
    fixed_decode_gb_per_sec: f64,
    fixed_encode_decode_gb_per_sec: f64,
    lz4: Vec<Lz4Figure>,
}

#[derive(Debug, Serialize)]
struct Lz4Figure {
    serializer: String,
    ratio: f64,
    compress_mb_per_sec: f64,
    decompress_mb_per_sec: f64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Records shaped like gensort's: a random 10-byte key (its first `key_bits` bits the same in
/// every record); a value of two marker bytes, the row number in 32 hex digits, four markers,
/// 48 letters, four markers.
fn generate(n: usize, key_bits: u32) -> Vec<u8> {
    let shared = u64::MAX.checked_shr(key_bits).unwrap_or(0);
    let mut data = vec![0u8; n * RECORD];
    data.par_chunks_mut(RECORD).enumerate().for_each(|(i, r)| {
        let a = splitmix(i as u64);
        let a = (a & shared) | (0x5a5a_5a5a_5a5a_5a5a & !shared);
        let b = splitmix(a);
        r[..8].copy_from_slice(&a.to_be_bytes());
        r[8..10].copy_from_slice(&b.to_be_bytes()[..2]);
        r[10..12].copy_from_slice(&[0x00, 0x11]);
        let hex = format!("{i:032X}");
        r[12..44].copy_from_slice(hex.as_bytes());
        r[44..48].copy_from_slice(&[0x88, 0x99, 0xaa, 0xbb]);
        for (j, c) in r[48..96].iter_mut().enumerate() {
            *c = b'A' + ((i / 4 + j / 4) % 26) as u8;
        }
        r[96..100].copy_from_slice(&[0xcc, 0xdd, 0xee, 0xff]);
    });
    data
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The fastest and slowest round of sorted `times`: how noisy the run was.
fn spread(times: &[f64]) -> String {
    match (times.first(), times.last()) {
        (Some(min), Some(max)) => format!("rounds {min:.3} to {max:.3} s"),
        _ => String::new(),
    }
}

fn sorted_by_key(data: &[u8]) -> bool {
    data.chunks(RECORD)
        .zip(data.chunks(RECORD).skip(1))
        .all(|(a, b)| a[..KEY] <= b[..KEY])
}

fn main() -> anyhow::Result<()> {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Ok(());
        }
        Err(e) => bail!(
            "{}",
            e.to_string().lines().next().unwrap_or("bad arguments")
        ),
    };
    if args.records == 0 || args.rounds == 0 {
        bail!("--records and --rounds must be at least 1");
    }
    let n = args.records;
    let bytes = n * RECORD;
    let mb = bytes as f64 / 1e6;
    let threads = rayon::current_num_threads();
    eprintln!("generating {n} records ({mb:.0} MB), {threads} threads");
    if args.key_bits > 64 {
        bail!("--key-bits must be at most 64");
    }
    let data = generate(n, args.key_bits);
    let format = Fixed::new(KEY, RECORD - KEY)?;

    // Each round times the baseline (rayon's unstable parallel sort of the records themselves,
    // by key) and then each sorter, on copies made before the clock starts, so the machine's
    // drift hits both alike; figures are medians over the rounds.
    let names: Vec<&str> = args.sorters.split(',').filter(|s| !s.is_empty()).collect();
    let sorters = names
        .iter()
        .map(|name| by_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut baseline_times = Vec::new();
    let mut sorter_times = vec![Vec::new(); sorters.len()];
    let mut reference = Vec::new();
    // The sorters' buffers are reused from round to round, as a service reuses them.
    let mut out = crail_sorters::sort_buffer(data.len())?;
    let mut scratch = crail_sorters::sort_buffer(data.len())?;
    out.fill(1);
    scratch.fill(1);
    for round in 0..args.rounds {
        let mut records: Vec<[u8; RECORD]> = data
            .chunks_exact(RECORD)
            .map(|c| c.try_into().unwrap_or([0; RECORD]))
            .collect();
        let t = Instant::now();
        records.par_sort_unstable_by(|a, b| a[..KEY].cmp(&b[..KEY]));
        baseline_times.push(t.elapsed().as_secs_f64());
        if round == 0 {
            reference = records.concat();
        }
        drop(records);
        for (sorter, times) in sorters.iter().zip(sorter_times.iter_mut()) {
            out[..].copy_from_slice(&data);
            let t = Instant::now();
            sort_fixed_in_place(&**sorter, &mut out, &mut scratch, &format)?;
            times.push(t.elapsed().as_secs_f64());
            if !sorted_by_key(&out) {
                bail!("{}: output not sorted", sorter.name());
            }
            let same_keys = out
                .chunks(RECORD)
                .zip(reference.chunks(RECORD))
                .all(|(a, b)| a[..KEY] == b[..KEY]);
            if !same_keys {
                bail!("{}: output differs from the baseline's", sorter.name());
            }
        }
    }
    let baseline = median(&mut baseline_times);
    println!(
        "{:<34} {:>8.3} s {:>9.0} MB/s   (median of {} rounds; {})",
        "baseline par_sort_unstable_by",
        baseline,
        mb / baseline,
        args.rounds,
        spread(&baseline_times)
    );
    let mut sorts = Vec::new();
    for (name, times) in names.iter().zip(sorter_times.iter_mut()) {
        let seconds = median(times);
        let speedup = baseline / seconds;
        println!(
            "{:<34} {:>8.3} s {:>9.0} MB/s   {speedup:.2}x the baseline ({})",
            format!("sorter {name}"),
            seconds,
            mb / seconds,
            spread(times)
        );
        sorts.push(SortFigure {
            sorter: (*name).to_owned(),
            seconds,
            mb_per_sec: mb / seconds,
            speedup_vs_baseline: speedup,
        });
    }
    drop((out, scratch, reference));

    // Fixed-length encode and decode, one core, through 1 MiB chunks as streams deliver.
    let fixed = Serializer::by_name("fixed:10:90")?;
    let (encode, decode, encoded) = codec_pass(&fixed, &data)?;
    if encoded != bytes {
        bail!("fixed encoding is {encoded} bytes, not {bytes}");
    }
    let gb = bytes as f64 / 1e9;
    println!(
        "{:<34} encode {:.2} GB/s, decode {:.2} GB/s, both {:.2} GB/s (one core)",
        "fixed:10:90",
        gb / encode,
        gb / decode,
        gb / (encode + decode)
    );

    let mut lz4 = Vec::new();
    for name in ["fixed:10:90+lz4", "kv+lz4"] {
        let ser = Serializer::by_name(name)?;
        let (compress, decompress, stored) = codec_pass(&ser, &data)?;
        let ratio = bytes as f64 / stored as f64;
        println!(
            "{name:<34} compress {:.0} MB/s, decompress {:.0} MB/s, ratio {ratio:.2} (one core)",
            mb / compress,
            mb / decompress
        );
        lz4.push(Lz4Figure {
            serializer: name.to_owned(),
            ratio,
            compress_mb_per_sec: mb / compress,
            decompress_mb_per_sec: mb / decompress,
        });
    }

    if args.json {
        let summary = Summary {
            records: n,
            bytes,
            rounds: args.rounds,
            threads,
            baseline: "rayon par_sort_unstable_by on the records",
            baseline_seconds: baseline,
            sorts,
            fixed_encode_gb_per_sec: gb / encode,
            fixed_decode_gb_per_sec: gb / decode,
            fixed_encode_decode_gb_per_sec: gb / (encode + decode),
            lz4,
        };
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

/// Encodes every record of `data` with `ser`, taking 1 MiB at a time into recycled buffers
/// (as a stream to the store recycles them), then decodes the stream fed in 1 MiB chunks,
/// touching each record. Returns (encode s, decode s, encoded bytes).
fn codec_pass(ser: &Serializer, data: &[u8]) -> anyhow::Result<(f64, f64, usize)> {
    const CHUNK: usize = 1 << 20;
    // The chunks the decoder reads, made before either clock starts.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut enc = ser.encoder();
    for r in data.chunks_exact(RECORD) {
        enc.push(&r[..KEY], &r[KEY..])?;
        if enc.ready() >= CHUNK {
            blocks.push(enc.take());
        }
    }
    blocks.push(enc.finish()?);
    let encoded: usize = blocks.iter().map(Vec::len).sum();

    let mut enc = ser.encoder();
    // Filled with ones, not zeros, so its pages are touched before the clock starts.
    let mut spare = vec![1u8; 2 * CHUNK];
    let mut sent = 0usize;
    let t = Instant::now();
    for r in data.chunks_exact(RECORD) {
        enc.push(&r[..KEY], &r[KEY..])?;
        if enc.ready() >= CHUNK {
            spare = enc.swap(spare);
            sent += spare.len();
        }
    }
    sent += enc.finish()?.len();
    let encode = t.elapsed().as_secs_f64();
    if sent != encoded {
        bail!("{}: encoded {sent} bytes, then {encoded}", ser.name());
    }

    let t = Instant::now();
    let mut dec = ser.decoder::<&[u8]>();
    let (mut count, mut check) = (0usize, 0u64);
    for block in &blocks {
        dec.push(block);
        while let Some(r) = dec.next_record()? {
            count += 1;
            check = check.wrapping_add(u64::from(r.key[0]) + u64::from(r.value[r.value.len() - 1]));
        }
    }
    dec.finish()?;
    let decode = t.elapsed().as_secs_f64();
    if count != data.len() / RECORD {
        bail!(
            "{}: decoded {count} records of {}",
            ser.name(),
            data.len() / RECORD
        );
    }
    std::hint::black_box(check);
    Ok((encode, decode, encoded))
}
