#!/usr/bin/env bash
# Sorting 1 GB of 100-byte records in Ray: crail.ray.sort against Ray Data's own sort, same
# run, on a fresh 3-node crail cluster (sdk-python/bench/ray_sort.py). Builds crail and the
# Python SDK in release mode into target/py (with Ray) first.
#
#   SIZE=1GB ROUNDS=3 ./scripts/bench-ray.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/py/bin/python ] || python3 -m venv target/py
target/py/bin/pip install -q --disable-pip-version-check "maturin>=1.7,<2" numpy \
  "ray[data]>=2.40,<3" pyarrow
cargo build -q --release --locked -p crail-cli
(cd sdk-python && VIRTUAL_ENV="$PWD/../target/py" PATH="$PWD/../target/py/bin:$PATH" \
  maturin develop -q --release)
target/py/bin/python sdk-python/bench/ray_sort.py --size "${SIZE:-1GB}" \
  --rounds "${ROUNDS:-3}" --crail-bin target/release/crail --json
