"""Bytes a Spark shuffle stores with and without compression: SQL rows of order-like columns
repartitioned by customer (every row crosses the shuffle), on Spark's own sort shuffle (lz4,
its default) and on crail's with compression off, lz4, zstd and snappy, in one run. Prints
seconds and stored bytes per mode (from the map statuses) and a JSON line last.

    python compression.py --rows 5000000 --rounds 2
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "sdk-python" / "tests"))

MODES = {
    "spark": {},
    "crail-raw": {"spark.shuffle.compress": "false"},
    "crail-lz4": {"spark.io.compression.codec": "lz4"},
    "crail-zstd": {"spark.io.compression.codec": "zstd"},
    "crail-snappy": {"spark.io.compression.codec": "snappy"},
}
PARTITIONS = 16


def run(mode, rows, jar, config):
    from pyspark.sql import SparkSession
    builder = (SparkSession.builder.master("local-cluster[2,1,2048]")
               .appName(f"compression-{mode}")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.adaptive.enabled", "false"))
    conf = dict(MODES[mode])
    if mode != "spark":
        conf.update({"spark.shuffle.manager": "io.crail.spark.CrailShuffleManager",
                     "spark.jars": jar, "spark.executor.extraClassPath": jar,
                     "spark.crail.config": config})
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    try:
        df = spark.range(0, rows, 1, 8).selectExpr(
            "id", "id % 100000 AS customer", "concat('order-', id) AS order_key",
            "cast(id % 997 AS double) * 1.25 AS price",
            "date_add(DATE'2020-01-01', cast(id % 1500 AS int)) AS day",
            "elt(cast(id % 5 AS int) + 1, 'SHIPPED', 'PENDING', 'RETURNED', 'LOST', 'OPEN') "
            "AS status")
        start = time.perf_counter()
        df.repartition(PARTITIONS, "customer").write.format("noop").mode("overwrite").save()
        secs = time.perf_counter() - start
        checks = spark.sparkContext._jvm.org.apache.spark.shuffle.crail.ShuffleChecks
        return secs, checks.shuffleBytes(0, PARTITIONS)
    finally:
        spark.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--jar", default=str(ROOT / "spark-plugin/target/crail-spark-0.1.0.jar"))
    p.add_argument("--bin", default=str(ROOT / "target/release"),
                   help="directory of the crail binary")
    args = p.parse_args()
    os.environ["CRAIL_BIN"] = str(Path(args.bin) / "crail")
    os.environ["PYSPARK_SUBMIT_ARGS"] = f"--driver-class-path {args.jar} pyspark-shell"
    from crail_cluster import crail_cluster

    times = {m: [] for m in MODES}
    stored = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="crail-spark-compression-") as tmp, \
            crail_cluster(Path(tmp), "3GiB") as config:
        for r in range(args.rounds):
            order = list(MODES) if r % 2 == 0 else list(MODES)[::-1]
            for mode in order:
                secs, shuffled = run(mode, args.rows, args.jar, config)
                times[mode].append(secs)
                stored[mode].append(shuffled)
                print(f"round {r + 1}: {mode} {secs:.1f} s, {shuffled / 1e6:,.1f} MB stored",
                      flush=True)
    raw = statistics.median(stored["crail-raw"])
    for mode in MODES:
        print(f"{mode}: median {statistics.median(times[mode]):.1f} s, "
              f"{statistics.median(stored[mode]) / 1e6:,.1f} MB stored "
              f"({statistics.median(stored[mode]) / raw:.2f} of uncompressed)")
    print(json.dumps({"rows": args.rows, "seconds": times, "stored_bytes": stored}))


if __name__ == "__main__":
    main()
