#!/usr/bin/env bash
# Spark TeraSort with crail's shuffle (fixed:10:90, radix) against Spark's own sort shuffle,
# same gensort input, same run (spark-plugin/bench/terasort.py). Installs pyspark into
# target/py and builds crail, terasort and the plugin jar in release mode first.
#
#   SIZE=1GB ROUNDS=3 ./scripts/bench-spark.sh
#   MODES=spark,crail,crail-frames,crail-frames-raw ./scripts/bench-spark.sh   # and compression
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/py/bin/python ] || python3 -m venv target/py
target/py/bin/pip install -q --disable-pip-version-check "pyspark==4.3.0"
cargo build -q --release --locked -p crail-cli -p bench-terasort
SPARK_HOME=$(target/py/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
(cd spark-plugin && mvn -q -B package)
target/py/bin/python spark-plugin/bench/terasort.py --size "${SIZE:-1GB}" \
  --rounds "${ROUNDS:-3}" --modes "${MODES:-spark,crail}" --json
