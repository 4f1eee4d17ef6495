#!/usr/bin/env bash
# Sorter and serializer benchmark on this machine (crail-sortbench): 10 M TeraSort-shaped
# records (1 GB) sorted by each sorter against rayon's par_sort_unstable_by on the same
# records, rounds alternating (medians); fixed-length encode and decode on one core; lz4
# framing. Prints the figures docs/benchmarks.md records.
#
#   ./scripts/bench-sort.sh                       # 10 M records, 5 rounds
#   RECORDS=1000000 ROUNDS=3 ./scripts/bench-sort.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p crail-sorters
./target/release/crail-sortbench --records "${RECORDS:-10000000}" --rounds "${ROUNDS:-5}" "$@"
