"""Sorting 100-byte records in Ray: crail.ray.sort (through the crail shuffle) against Ray Data's
own sort of the same Dataset, in the same run, on a fresh 3-node `crail cluster`.

The Dataset holds a 10-byte key column and a 90-byte value column (fixed-size binary), random
bytes, generated in Ray and materialized before the clock starts. Each round times both sorts to
a materialized Dataset; the first round checks that both give the same keys in the same order
and the same records. Prints a line per round, medians, and a JSON line last.

    python ray_sort.py --size 1GB --rounds 3 --crail-bin target/release/crail
"""

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

import crail.ray

RECORD, KEY = 100, 10


def parse_size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
             "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}
    t = text.strip().upper()
    num = t.rstrip("KMGIB")
    unit = t[len(num):]
    if not num or unit not in units:
        raise SystemExit(f"bad size {text!r}: say 1GB, 512MiB, ...")
    return int(float(num) * units[unit])


@ray.remote
def generate(i: int, rows: int) -> pa.Table:
    rng = np.random.default_rng(i)
    data = rng.integers(0, 256, size=(rows, RECORD), dtype=np.uint8)
    keys, values = np.ascontiguousarray(data[:, :KEY]), np.ascontiguousarray(data[:, KEY:])
    return pa.table({
        "key": pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY), rows,
                                                    [None, pa.py_buffer(keys)]),
        "value": pa.FixedSizeBinaryArray.from_buffers(pa.binary(RECORD - KEY), rows,
                                                      [None, pa.py_buffer(values)]),
    })


def column_bytes(table: pa.Table, name: str, width: int) -> np.ndarray:
    out = []
    for chunk in table.column(name).chunks:
        buf = np.frombuffer(chunk.buffers()[1], np.uint8)
        out.append(buf[chunk.offset * width:(chunk.offset + len(chunk)) * width])
    return np.concatenate(out).reshape(-1, width) if out else np.empty((0, width), np.uint8)


def fingerprint(ds) -> tuple[np.ndarray, int]:
    """The keys in order, and an order-free hash of whole records."""
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    keys = column_bytes(table, "key", KEY)
    values = column_bytes(table, "value", RECORD - KEY)
    words = np.concatenate([keys, values, np.zeros((len(keys), 4), np.uint8)], axis=1)
    words = words.view(np.uint64)  # 13 words a record
    mult = np.random.default_rng(0).integers(1, 1 << 63, words.shape[1], dtype=np.uint64) | 1
    with np.errstate(over="ignore"):
        h = (words * mult).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
    return keys, int(np.bitwise_xor.reduce(h)) if len(h) else 0


def run(args, config: str, records: int, gb: float) -> tuple[list[float], list[float]]:
    """The rounds, on a started crail cluster: each sort's seconds."""
    ray.init(num_cpus=2, resources={"crail:127.0.0.2": 1}, include_dashboard=False,
             object_store_memory=8 << 30, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ctx = crail.ray.Context(config, app="ray-sort-bench")
    t = time.perf_counter()
    per = [records // args.blocks + (i < records % args.blocks) for i in range(args.blocks)]
    ds = ray.data.from_arrow_refs([generate.remote(i, n) for i, n in enumerate(per)])
    print(f"generated {records:,} records ({gb:.2f} GB) in {args.blocks} blocks "
          f"in {time.perf_counter() - t:.1f} s", flush=True)

    ray_secs, crail_secs = [], []
    for r in range(args.rounds):
        # Alternate which goes first, so neither always meets a warmer machine.
        order = ["ray", "crail"] if r % 2 == 0 else ["crail", "ray"]
        outs = {}
        for which in order:
            t = time.perf_counter()
            if which == "ray":
                outs[which] = ds.sort("key").materialize()
            else:
                outs[which] = crail.ray.sort(ds, "key", context=ctx)
            secs = time.perf_counter() - t
            (ray_secs if which == "ray" else crail_secs).append(secs)
        if r == 0:
            (k1, h1), (k2, h2) = fingerprint(outs["ray"]), fingerprint(outs["crail"])
            if not (np.array_equal(k1, k2) and h1 == h2 and len(k1) == records):
                raise SystemExit("crail.ray.sort and Ray Data's sort disagree")
            print("round 1: both sorts give the same keys in order and the same records",
                  flush=True)
        del outs
        print(f"round {r + 1}: Ray Data sort {ray_secs[-1]:.2f} s, crail.ray.sort "
              f"{crail_secs[-1]:.2f} s ({ray_secs[-1] / crail_secs[-1]:.2f}x)", flush=True)
    ctx.end()
    return ray_secs, crail_secs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GB", help="data to sort (default 1GB)")
    p.add_argument("--blocks", type=int, default=8, help="input blocks = map tasks (default 8)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--crail-bin", default="target/release/crail")
    p.add_argument("--dram", default="2GiB", help="DRAM per crail node (default 2GiB)")
    p.add_argument("--json", action="store_true", help="print a JSON line last")
    args = p.parse_args()
    records = parse_size(args.size) // RECORD
    if records < args.blocks or args.blocks < 1 or args.rounds < 1:
        raise SystemExit("need --blocks >= 1, --rounds >= 1 and at least a record per block")
    gb = records * RECORD / 1e9
    logging.basicConfig(format="  crail.ray: %(message)s")
    logging.getLogger("crail.ray").setLevel(logging.INFO)

    # The tests' helper starts the cluster (CRAIL_BIN names the binary).
    os.environ["CRAIL_BIN"] = args.crail_bin
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from crail_cluster import crail_cluster

    with tempfile.TemporaryDirectory(prefix="crail-ray-bench-") as tmp:
        with crail_cluster(Path(tmp), args.dram) as config:
            try:
                ray_secs, crail_secs = run(args, config, records, gb)
            finally:
                ray.shutdown()

    ray_med, crail_med = statistics.median(ray_secs), statistics.median(crail_secs)
    print(f"median of {args.rounds}: Ray Data sort {ray_med:.2f} s ({gb / ray_med:.2f} GB/s), "
          f"crail.ray.sort {crail_med:.2f} s ({gb / crail_med:.2f} GB/s): "
          f"{ray_med / crail_med:.2f}x")
    if args.json:
        print(json.dumps({
            "records": records, "gb": gb, "blocks": args.blocks,
            "ray_seconds": ray_secs, "crail_seconds": crail_secs,
            "ray_median": ray_med, "crail_median": crail_med,
            "speedup": ray_med / crail_med,
        }))


if __name__ == "__main__":
    sys.exit(main())
