#!/usr/bin/env bash
# The project's main job on this machine. Today that is the metadata benchmark (a real
# namenode, iobench clients, and the framed-vs-tonic comparison); once the data plane, the
# shuffle service and bench-terasort exist, it becomes TeraSort end to end on the embedded
# cluster. Needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./scripts/bench-namenode.sh "$@"
