"""Spark TeraSort with crail's shuffle (fixed-length serializer, radix sorter) against Spark's
own sort shuffle, on the same gensort input, in the same run.

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
    return result["seconds"], wall, result["records"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1GB")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--partitions", type=int, default=8, help="reduce partitions (default 8)")
    p.add_argument("--master", default="local-cluster[2,1,2048]")
    p.add_argument("--jar", default=str(ROOT / "spark-plugin/target/crail-spark-0.1.0.jar"))
    p.add_argument("--bin", default=str(ROOT / "target/release"),
                   help="directory of the crail and terasort binaries")
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
        times = {"spark": [], "crail": []}
        with crail_cluster(tmp, "3GiB") as config:
            crail_conf = {
                "spark.jars": args.jar,
                "spark.driver.extraClassPath": args.jar,
                "spark.executor.extraClassPath": args.jar,
                "spark.shuffle.manager": "io.crail.spark.CrailShuffleManager",
                "spark.crail.config": config,
                "spark.crail.shuffle.serializer": "fixed:10:90",
                "spark.crail.shuffle.sorter": "radix",
            }
            for r in range(args.rounds):
                order = ["spark", "crail"] if r % 2 == 0 else ["crail", "spark"]
                line = []
                for which in order:
                    out = tmp / f"out-{which}-{r}"
                    conf = crail_conf if which == "crail" else {}
                    secs, wall, n = spark_submit(
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
                    line.append(f"{which} {secs:.1f} s (wall {wall:.1f} s)")
                print(f"round {r + 1}: " + ", ".join(line) + ", both valid", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median of {args.rounds}: Spark's sort shuffle {med['spark']:.1f} s "
          f"({gb / med['spark']:.3f} GB/s), crail {med['crail']:.1f} s "
          f"({gb / med['crail']:.3f} GB/s): {med['spark'] / med['crail']:.2f}x")
    if args.json:
        print(json.dumps({"records": records, "gb": gb, "spark_seconds": times["spark"],
                          "crail_seconds": times["crail"],
                          "speedup": med["spark"] / med["crail"]}))


if __name__ == "__main__":
    main()
