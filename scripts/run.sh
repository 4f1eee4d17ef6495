#!/usr/bin/env bash
# The project's main job: TeraSort end to end on an embedded 3-node cluster (`terasort run`):
# gensort-compatible input, an in-memory sort of it in one process (the baseline), the sort
# through the shuffle service, valsort's checks; a summary, the last line JSON, and a chart of
# the phases (terasort-run.svg). Needs only the Rust toolchain.
#
#   ./scripts/run.sh                      # 4 GiB (needs about 9 GiB of free memory)
#   SIZE=1GiB ./scripts/run.sh            # a smaller machine
#   ./scripts/run.sh --nodes 5            # more flags go to `terasort run`
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p bench-terasort
exec target/release/terasort run --size "${SIZE:-4GiB}" --json "$@"
