#!/usr/bin/env bash
# What TLS costs, measured in one run: two 2-node `crail cluster`s side by side, one in the
# clear and one with `--tls` (a throwaway CA; every TCP connection TLS 1.3, AES-128-GCM), the
# same `crail iobench` rows from 127.0.0.1 (no node's host, so every byte crosses a TCP
# connection) against each, alternating; then `terasort run --size 4GiB` without and with
# `--tls`, alternating, caches dropped before each (as root). Prints each figure of each
# round and the medians, for docs/benchmarks.md.
#
#   ./scripts/bench-tls.sh               # 3 rounds
#   ROUNDS=1 SORT=1GiB ./scripts/bench-tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SORT=${SORT:-4GiB}

cargo build --release --locked -q -p crail-cli -p bench-terasort
bin=target/release
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for mode in plain tls; do
  flag=""
  [ "$mode" = tls ] && flag="--tls"
  "$bin/crail" cluster --nodes 2 --dram 2GiB --listen 127.0.0.1:0 $flag \
    --config-out "$work/$mode.toml" >"$work/$mode.out" 2>&1 &
  pids+=($!)
done
for _ in $(seq 300); do
  [ -f "$work/plain.toml" ] && [ -f "$work/tls.toml" ] && break
  sleep 0.1
done
[ -f "$work/tls.toml" ] || { cat "$work"/*.out; exit 1; }

field() { python3 -c "import json,sys; print(round(json.loads(sys.stdin.readlines()[-1])['$1'], 2))"; }
declare -A figures
record() { figures["$1"]="${figures["$1"]:-} $2"; }
for round in $(seq "$ROUNDS"); do
  for mode in plain tls; do
    cfg="$work/$mode.toml"
    w=$("$bin/crail" iobench --config "$cfg" -t writeAsync -s 512MiB -b 1MiB -o 4 -k 3 --json | field mb_per_sec)
    r=$("$bin/crail" iobench --config "$cfg" -t readAsync -s 512MiB -b 1MiB -o 4 -k 3 --json | field mb_per_sec)
    l=$("$bin/crail" iobench --config "$cfg" -t readRandom -s 256MiB -b 4096 -k 20000 --json | field p50_us)
    echo "round $round $mode: write $w MB/s, read $r MB/s, 4 KiB random read p50 $l us"
    record "$mode write" "$w"
    record "$mode read" "$r"
    record "$mode p50" "$l"
  done
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
pids=()

for round in $(seq "$ROUNDS"); do
  for mode in plain tls; do
    flag=""
    [ "$mode" = tls ] && flag="--tls"
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    s=$("$bin/terasort" run --size "$SORT" --json --chart "$work/chart.svg" $flag | field seconds)
    echo "round $round $mode: terasort $SORT $s s"
    record "$mode sort" "$s"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Each row: every round's figure, the median in bold.
echo
echo "| what | plain | TLS | TLS / plain |"
echo "|---|---|---|---:|"
for what in write read p50 sort; do
  p=$(echo "${figures["plain $what"]}" | median)
  t=$(echo "${figures["tls $what"]}" | median)
  ratio=$(python3 -c "print(f'{$t / $p:.2f}')")
  list() { echo "$1" | sed 's/^ //; s/ /, /g'; }
  echo "| $what | $(list "${figures["plain $what"]}"): **$p** | $(list "${figures["tls $what"]}"): **$t** | $ratio |"
done
