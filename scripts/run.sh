#!/usr/bin/env bash
# The project's main job on this machine. Today that is the store benchmark (a real
# namenode with iobench clients and the framed-vs-tonic comparison, then dram and flash datanodes
# with data-plane reads and writes, then the sorters and serializers, then the shuffle service
# and the broadcast service on a 3-node cluster); once bench-terasort exists, it becomes TeraSort end to end on the
# embedded cluster. Needs only the Rust toolchain.
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
