#!/usr/bin/env bash
# Shuffle benchmark on this machine: a 3-node `crail cluster` (each node its own process on
# 127.0.0.2-4 with a DRAM datanode and its shuffle service), then `crail shufflebench` with
# engines on every node: SIZE of TeraSort records per round for 64 maps x 32 partitions, 4x
# the maps, 4x the partitions and both, each round beside a plain loopback TCP stream of the
# same size (medians over ROUNDS). Prints the figures docs/benchmarks.md records.
#
#   ./scripts/bench-shuffle.sh                         # 2 GiB, 3 rounds
#   SIZE=256MiB ROUNDS=1 ./scripts/bench-shuffle.sh    # quicker
#   ./scripts/bench-shuffle.sh --shapes 64x32 --json   # extra flags go to shufflebench
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-2GiB}
ROUNDS=${ROUNDS:-3}
DRAM=${DRAM:-2GiB}

. scripts/bench-cluster.sh
grep -E '^(cluster up|shuffle service)' "$work/cluster.out"
echo
"$bin/crail" --config "$work/client.toml" shufflebench --size "$SIZE" --rounds "$ROUNDS" "$@"
