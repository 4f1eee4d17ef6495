#!/usr/bin/env bash
# Every component benchmark on this machine: a real namenode with iobench clients and the
# framed-vs-tonic comparison, then dram and flash datanodes with data-plane reads and writes,
# then the sorters and serializers, then the shuffle service and the broadcast service on a
# 3-node cluster (the figures docs/benchmarks.md records). The main job is ./scripts/run.sh.
# Needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bench-namenode.sh
echo
./scripts/bench-data.sh
echo
./scripts/bench-sort.sh
echo
./scripts/bench-shuffle.sh
echo
./scripts/bench-broadcast.sh
