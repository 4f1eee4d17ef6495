#!/usr/bin/env bash
# What the namenode's journal costs, measured in one run: `crail iobench -t createFile` against
# a namenode without a journal and one with (`--journal DIR` on this machine's disk), side by
# side, alternating rounds, at 1 client (each create waits for its sync) and at 16 clients x 4
# (syncs shared by many creates); then how long a namenode takes to come back after SIGKILL
# over a namespace of ENTRIES entries, from the log alone and from a snapshot. Prints each
# round and the medians, for docs/benchmarks.md.
#
#   ./scripts/bench-journal.sh                       # 3 rounds, 1,000,000 entries
#   ROUNDS=1 ENTRIES=200000 ./scripts/bench-journal.sh
#   ROUNDS=0 ./scripts/bench-journal.sh              # the restarts only
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
ENTRIES=${ENTRIES:-1000000}
OPS=${OPS:-50000}

cargo build --release --locked -q -p crail-cli
crail=target/release/crail
work=$(mktemp -d -p "${TMPDIR:-/var/tmp}")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a namenode (args after the name), waits for its port; sets $addr and $pid.
namenode() {
  local name=$1
  shift
  : >"$work/$name.out"
  "$crail" namenode --listen 127.0.0.1:0 "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 6000); do
    addr=$(sed -n 's/^namenode listening on //p' "$work/$name.out")
    [ -n "$addr" ] && return
    sleep 0.01
  done
  cat "$work/$name.log"
  exit 1
}

field() { python3 -c "import json,sys; print(round(json.loads(sys.stdin.readlines()[-1])['$1'], 1))"; }
median() { python3 -c "import statistics,sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 2))" "$@"; }

namenode plain
plain=$addr
namenode journal --journal "$work/journal"
journaled=$addr
echo "journal on $(df -T "$work" | awk 'NR==2 {print $2, $1}')"

declare -A results
rows=("1 1" "1 4" "16 4")
for round in $(seq "$ROUNDS"); do
  for row in "${rows[@]}"; do
    read -r clients outstanding <<<"$row"
    for mode in plain journaled; do
      nn=$plain
      [ "$mode" = journaled ] && nn=$journaled
      out=$("$crail" iobench --namenode "$nn" -t createFile -k "$OPS" -c "$clients" \
        -o "$outstanding" --json)
      rate=$(field ops_per_sec <<<"$out")
      p50=$(field p50_us <<<"$out")
      results["$mode $row"]+="$rate "
      results["$mode $row p50"]+="$p50 "
      echo "round $round createFile ${clients}x$outstanding $mode: $rate ops/s, p50 $p50 us"
    done
  done
done
if [ "$ROUNDS" -gt 0 ]; then
echo
echo "createFile, medians of $ROUNDS rounds ($OPS creates each):"
printf '%-10s %14s %14s %10s %12s %12s\n' clients "no journal/s" "journal/s" ratio "p50 none us" "p50 jrnl us"
for row in "${rows[@]}"; do
  a=$(median ${results["plain $row"]})
  b=$(median ${results["journaled $row"]})
  pa=$(median ${results["plain $row p50"]})
  pb=$(median ${results["journaled $row p50"]})
  printf '%-10s %14s %14s %10s %12s %12s\n' "${row/ /x}" "$a" "$b" \
    "$(python3 -c "print(round($b / $a, 2))")" "$pa" "$pb"
done
fi
kill -9 "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
pids=()

# Restart time over ENTRIES entries: from the log alone (no snapshot yet), then from a snapshot
# (written in the background once the log passed 16 MiB) and the log after it.
restart() {
  local label=$1 dir=$2
  shift 2
  namenode "$label-fill" --journal "$dir" "$@"
  "$crail" iobench --namenode "$addr" -t createFile -k "$ENTRIES" -c 16 -o 8 --keep \
    --warmup 0 >/dev/null
  sleep 2
  local files
  files=$(ls "$dir" | tr '\n' ' ')
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  local start end
  start=$(date +%s.%N)
  namenode "$label-again" --journal "$dir" "$@"
  end=$(date +%s.%N)
  local rss
  rss=$(awk '/VmRSS/ {print $2 / 1024 " MiB"}' "/proc/$pid/status")
  local bytes
  bytes=$(du -sb "$dir" | cut -f1)
  echo "restart $label: $(python3 -c "print(round($end - $start, 2))") s for $ENTRIES entries," \
    "journal $((bytes >> 20)) MiB ($files), namenode RSS $rss"
  grep -h "restored" "$work/$label-again.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -1
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
}
echo
restart log "$work/j-log"
CRAIL_NAMENODE_JOURNAL_SNAPSHOT_EVERY=16MiB restart snapshot "$work/j-snap"
