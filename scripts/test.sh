#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy (warnings are errors), all unit,
# integration and doc tests, the Python SDK's and the Spark plugin's tests, the `rdma` feature,
# and a short run of each fuzz target. Installs what it needs (cargo-fuzz; maturin, pytest,
# numpy, Ray and pyspark into target/py; libclang for the rdma feature, through apt) itself.
# CI (.ci/run) runs exactly this.
#
#   FUZZ_SECONDS=0 ./scripts/test.sh    # skip the fuzz run
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# What engines link (no store servers, no service halves): its own feature set.
cargo clippy -p crail-sdk --lib --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "Python SDK: built into a virtualenv (maturin), pytest against a real cluster and real Ray"
# target/py: a virtualenv of our own, so nothing is installed outside the checkout.
[ -x target/py/bin/python ] || python3 -m venv target/py
target/py/bin/pip install -q --disable-pip-version-check "maturin>=1.7,<2" "pytest>=7" numpy \
  "ray[data]>=2.40,<3" pyarrow "pyspark==4.3.0"
(cd sdk-python && VIRTUAL_ENV="$PWD/../target/py" PATH="$PWD/../target/py/bin:$PATH" maturin develop -q)
cargo build -q --locked -p crail-cli
CRAIL_BIN="$PWD/target/debug/crail" target/py/bin/pytest -q sdk-python/tests

step "Spark plugin: the jar (mvn), pytest with the pyspark package's Spark against a real cluster"
# Compiled against the pyspark package's jars (SPARK_HOME), its bridge in the dev profile (the
# test build above already built its dependencies).
SPARK_HOME=$(target/py/bin/python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
export SPARK_HOME
(cd spark-plugin && mvn -q -B package -Dcargo.profile=dev -Dcargo.dir=debug)
CRAIL_BIN="$PWD/target/debug/crail" target/py/bin/pytest -q spark-plugin/tests

step "rdma feature: compiles, refuses cleanly at run time"
# sideway's build generates bindings with bindgen, which needs libclang.
if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
  command -v apt-get >/dev/null || { echo "the rdma check needs libclang (bindgen)"; exit 1; }
  apt-get install -y -q libclang-dev >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q libclang-dev >/dev/null; }
fi
cargo clippy -p crail-store --lib --features rdma --locked -- -D warnings
cargo clippy -p crail-cli --features rdma --locked -- -D warnings
cargo test -p crail-store --lib --features rdma --locked -- rdma

fuzz_seconds=${FUZZ_SECONDS:-15}
if [ "$fuzz_seconds" -gt 0 ]; then
  step "fuzz targets, ${fuzz_seconds}s each"
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
  fi
  # No sanitizer: it needs a nightly compiler, and panics are what safe Rust can fail with.
  for dir in crail-store/fuzz node-service/fuzz serializers/fuzz; do
    (
      cd "$dir"
      for target in $(cargo fuzz list); do
        echo "$dir: $target"
        log=$(mktemp)
        if ! cargo fuzz run -s none -O "$target" -- -max_total_time="$fuzz_seconds" \
          -print_final_stats=0 >"$log" 2>&1; then
          tail -n 40 "$log"
          echo "fuzz target $dir $target failed"
          exit 1
        fi
        grep -E '^Done' "$log" || { tail -n 40 "$log"; echo "fuzz target $dir $target did not run"; exit 1; }
        rm -f "$log"
      done
    )
  done
fi

step "all checks passed"
