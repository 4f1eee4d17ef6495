"""Spark TeraSort with crail's shuffle (fixed-length serializer, radix sorter) against Spark's
own sort shuffle, on the same gensort input, in the same run; with `--modes`, also crail with
Spark's serializer (frames compressed as Spark's blocks: lz4 by default) and without
compression, with the bytes each shuffle stored.

Generates the input with `terasort gen` (gensort's records), starts a 3-node `crail cluster`,
then runs `io.crail.spark.examples.TeraSort` with spark-submit in local-cluster mode (two
executors), alternating vanilla and crail, and checks every output with `terasort validate`
(valsort's checks, the checksum equal to the input's). Prints a line per run, medians, and a
JSON line last.

    python terasort.py --size 1GB --rounds 3 --jar spark-plugin/target/crail-spark-0.1.0.jar
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "sdk-python" / "tests"))


def spark_submit(spark_home, master, conf, jar, args, log):
    cmd = [str(Path(spark_home) / "bin" / "spark-submit"), "--master", master,
           "--class", "io.crail.spark.examples.TeraSort",
           "--conf", "spark.ui.enabled=false",
           "--conf", "spark.serializer=org.apache.spark.serializer.KryoSerializer"]
    for k, v in conf.items():
        cmd += ["--conf", f"{k}={v}"]
    cmd += [jar, *args]
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=out, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"spark-submit failed ({done.returncode}); see {log}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], wall, result["records"], result["shuffle_bytes"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--partitions", type=int, default=8, help="reduce partitions (default 8)")
    p.add_argument("--master", default="local-cluster[2,1,2048]")
    p.add_argument("--jar", default=str(ROOT / "spark-plugin/target/crail-spark-0.1.0.jar"))
    p.add_argument("--bin", default=str(ROOT / "target/release"),
                   help="directory of the crail and terasort binaries")
    p.add_argument("--modes", default="spark,crail",
                   help="comma-separated: spark (Spark's sort shuffle), crail (fixed:10:90, "
                        "radix), crail-frames (Spark's serializer, spark.shuffle.compress on), "
                        "crail-frames-raw (the same, compression off)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    spark_home = os.environ.get("SPARK_HOME")
    if not spark_home:
        import pyspark
        spark_home = os.path.dirname(pyspark.__file__)
    terasort = str(Path(args.bin) / "terasort")
    os.environ["CRAIL_BIN"] = str(Path(args.bin) / "crail")
    from crail_cluster import crail_cluster

    with tempfile.TemporaryDirectory(prefix="crail-spark-terasort-") as tmp:
        tmp = Path(tmp)
        subprocess.run([terasort, "gen", "--size", args.size, "--out", str(tmp / "in"),
                        "--parts", "8"], check=True, stdout=subprocess.DEVNULL)
        records = sum(f.stat().st_size for f in (tmp / "in").iterdir()) // 100
        print(f"input: {records:,} gensort records ({records * 100 / 1e9:.2f} GB)", flush=True)
        gb = records * 100 / 1e9
        modes = args.modes.split(",")
        unknown = set(modes) - {"spark", "crail", "crail-frames", "crail-frames-raw"}
        if unknown or "spark" not in modes:
            raise SystemExit(f"--modes: spark and any of crail, crail-frames, "
                             f"crail-frames-raw (not {','.join(sorted(unknown))})")
        times = {m: [] for m in modes}
        stored = {m: [] for m in modes}
        with crail_cluster(tmp, "3GiB") as config:
            on_crail = {
                "spark.jars": args.jar,
                "spark.driver.extraClassPath": args.jar,
                "spark.executor.extraClassPath": args.jar,
                "spark.shuffle.manager": "io.crail.spark.CrailShuffleManager",
                "spark.crail.config": config,
            }
            confs = {
                "spark": {},
                "crail": {**on_crail, "spark.crail.shuffle.serializer": "fixed:10:90",
                          "spark.crail.shuffle.sorter": "radix"},
                "crail-frames": on_crail,
                "crail-frames-raw": {**on_crail, "spark.shuffle.compress": "false"},
            }
            for r in range(args.rounds):
                order = modes if r % 2 == 0 else modes[::-1]
                line = []
                for which in order:
                    out = tmp / f"out-{which}-{r}"
                    conf = confs[which]
                    secs, wall, n, shuffled = spark_submit(
                        spark_home, args.master, conf, args.jar,
                        [str(tmp / "in"), str(out), str(args.partitions)],
                        tmp / f"{which}-{r}.log")
                    if n != records:
                        raise SystemExit(f"{which}: {n} records out of {records}")
                    v = subprocess.run([terasort, "validate", str(out)], capture_output=True,
                                       text=True)
                    if v.returncode != 0:
                        raise SystemExit(f"{which}: invalid output: {v.stdout}{v.stderr}")
                    shutil.rmtree(out)
                    times[which].append(secs)
                    stored[which].append(shuffled)
                    line.append(f"{which} {secs:.1f} s (wall {wall:.1f} s, "
                                f"{shuffled / 1e6:,.0f} MB shuffled)")
                print(f"round {r + 1}: " + ", ".join(line) + ", all valid", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median of {args.rounds}: " + ", ".join(
        f"{m} {med[m]:.1f} s ({gb / med[m]:.3f} GB/s, {med['spark'] / med[m]:.2f}x Spark's, "
        f"{statistics.median(stored[m]) / 1e6:,.0f} MB shuffled)" for m in modes))
    if args.json:
        print(json.dumps({"records": records, "gb": gb,
                          **{f"{m}_seconds": times[m] for m in modes},
                          **{f"{m}_shuffle_bytes": stored[m] for m in modes},
                          **{f"{m}_speedup": med["spark"] / med[m] for m in modes}}))


if __name__ == "__main__":
    main()
