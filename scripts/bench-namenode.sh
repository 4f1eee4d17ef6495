#!/usr/bin/env bash
# Metadata benchmark on this machine: a real `crail namenode` process and `crail iobench`
# clients in another process, then the framed-vs-tonic transport comparison. Prints the
# figures docs/benchmarks.md records.
#
#   ./scripts/bench-namenode.sh          # K=200000 operations per row
#   K=50000 ./scripts/bench-namenode.sh  # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
K=${K:-200000}

cargo build --release --locked -q -p crail-cli -p crail-transport-bench
bin=target/release
work=$(mktemp -d)
nn_pid=
cleanup() {
  [ -n "$nn_pid" ] && kill "$nn_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/crail" namenode --listen 127.0.0.1:0 >"$work/namenode.out" 2>"$work/namenode.log" &
nn_pid=$!
for _ in $(seq 100); do
  grep -q 'listening on' "$work/namenode.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^namenode listening on //p' "$work/namenode.out")
[ -n "$addr" ] || { echo "namenode did not start:"; cat "$work/namenode.log"; exit 1; }
printf '[client]\nnamenode = "%s"\n' "$addr" >"$work/client.toml"

echo "## crail iobench, $K operations per row, namenode and clients on this machine ($(nproc) cores)"
echo
echo "| test | clients x in flight | ops/s | p50 us | p99 us |"
echo "|---|---|---:|---:|---:|"
row() {
  local test=$1 clients=$2 outstanding=$3
  shift 3
  "$bin/crail" iobench --config "$work/client.toml" -t "$test" -k "$K" \
    -c "$clients" -o "$outstanding" --json "$@" | tail -n 1 |
    python3 -c '
import json, sys
s = json.load(sys.stdin)
print("| %s | %d x %d | %s | %.1f | %.1f |" % (s["test"], s["clients"], s["outstanding"],
      format(round(s["ops_per_sec"]), ","), s["p50_us"], s["p99_us"]))'
}
row lookupFile 1 1
row lookupFile 16 1
row lookupFile 4 8
row createFile 1 1
row createFile 4 8
row deleteFile 1 1
row deleteFile 4 8
row listDir 1 1 --entries 100
row listDir 4 8 --entries 100

echo
echo "## Transport: framed RPC vs tonic (gRPC over HTTP/2), same namespace, same run"
echo
echo '```'
"$bin/crail-transport-bench" "$K"
echo '```'
