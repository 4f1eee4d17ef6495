#!/usr/bin/env bash
# Broadcast benchmark on this machine: a 3-node `crail cluster` (each node its own process on
# 127.0.0.2-4 with a DRAM datanode and its broadcast service), then `crail broadcastbench`:
# a SIZE value written on the first node and read by READERS engines on each node, through
# the node services against every reader fetching it from the node that wrote it (medians
# over ROUNDS). Prints the figures docs/benchmarks.md records.
#
#   ./scripts/bench-broadcast.sh                          # 1 GiB, 2 readers per node, 3 rounds
#   SIZE=128MiB ROUNDS=1 ./scripts/bench-broadcast.sh     # quicker
#   ./scripts/bench-broadcast.sh --json                   # extra flags go to broadcastbench
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1GiB}
READERS=${READERS:-2}
ROUNDS=${ROUNDS:-3}
DRAM=${DRAM:-3GiB}

. scripts/bench-cluster.sh
grep -E '^(cluster up|broadcast service)' "$work/cluster.out"
echo
"$bin/crail" --config "$work/client.toml" broadcastbench --size "$SIZE" --readers "$READERS" \
  --rounds "$ROUNDS" "$@"
