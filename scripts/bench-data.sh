#!/usr/bin/env bash
# Data-plane benchmark on this machine: a real `crail namenode`, a dram datanode on 127.0.0.2
# and a flash datanode on 127.0.0.3 (a file in FLASH_DIR), and `crail iobench` from 127.0.0.1.
# Sequential rows include plain TCP streams between the same two addresses, measured in the
# same run (one with the datanode side's bytes in memory the size of the file, one with a cached
# buffer at each end: the socket alone); readRandom rows include a plain TCP round trip between
# the same addresses (the machine's latency floor); same-host rows use the shared-memory fast path; `dd` with O_DIRECT on the same disk runs before and after the flash rows. Prints the
# figures docs/benchmarks.md records.
#
#   ./scripts/bench-data.sh                 # 1 GiB files
#   SIZE=256MiB ROUNDS=1 ./scripts/bench-data.sh     # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-1GiB}
FLASH_DIR=${FLASH_DIR:-$PWD/target}

cargo build --release --locked -q -p crail-cli
bin=target/release
work=$(mktemp -d)
image="$FLASH_DIR/crail-bench-flash.img"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work" "$image" "$FLASH_DIR/crail-bench-dd.img"
}
trap cleanup EXIT

wait_line() { # file pattern
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no '$2' in $1:"; cat "$1" "${1%.out}.log" 2>/dev/null; exit 1
}

"$bin/crail" namenode --listen 127.0.0.1:0 >"$work/nn.out" 2>"$work/nn.log" &
pids+=($!)
wait_line "$work/nn.out" 'listening on'
nn=$(sed -n 's/^namenode listening on //p' "$work/nn.out")
"$bin/crail" datanode --namenode "$nn" --listen 127.0.0.2:0 --tier dram --capacity 2GiB \
  >"$work/dram.out" 2>"$work/dram.log" &
pids+=($!)
"$bin/crail" datanode --namenode "$nn" --listen 127.0.0.3:0 --tier flash --capacity 2GiB \
  --path "$image" >"$work/flash.out" 2>"$work/flash.log" &
pids+=($!)
wait_line "$work/dram.out" 'listening on'
wait_line "$work/flash.out" 'listening on'
cat "$work/dram.out" "$work/flash.out"
# The remote client (TCP) runs on 127.0.0.1; same-host clients share a datanode's address.
for host in 1 2 3; do
  printf '[client]\nnamenode = "%s"\nlocal_host = "127.0.0.%s"\n' "$nn" "$host" >"$work/client-$host.toml"
done

echo
echo "| test | tier | path | buffer | in flight | MB/s | TCP, bytes at rest MB/s | % | socket alone MB/s | % | p50 us | p99 us | TCP round trip p50 us |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
row() { # client-host test class buffer outstanding count size
  "$bin/crail" iobench --config "$work/client-$1.toml" -t "$2" --storage-class "$3" -b "$4" \
    -o "$5" -k "$6" -s "$7" --json | tail -n 1 |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
tier = "dram" if sys.argv[1] == "0" else "flash"
mb = r["mb_per_sec"]
def vs(key):
    b = r.get(key)
    return ("%.0f" % b, "%.0f%%" % (mb / b * 100)) if b else ("-", "-")
(base, pct), (sock, spct) = vs("baseline_mb_per_sec"), vs("socket_mb_per_sec")
rt = "%.1f" % r["baseline_p50_us"] if "baseline_p50_us" in r else "-"
print("| %s | %s | %s | %d | %d | %.0f | %s | %s | %s | %s | %.1f | %.1f | %s |" % (
    r["test"], tier, r["transport"], r["buffer"], r["outstanding"], mb, base, pct, sock, spct,
    r["p50_us"], r["p99_us"], rt))
' "$3"
}
# Sequential rows run ROUNDS rounds of test + baselines, alternating, and print medians.
R=${ROUNDS:-3}
count=$(( $(numfmt --from=auto "${SIZE%B}") / 1048576 ))
dd_pair() { # the disk's own O_DIRECT figures, run beside the flash rows (this disk drifts)
  echo "| dd, 1 MiB O_DIRECT ($1) | flash | - | 1048576 | 1 | write $(dd if=/dev/zero of="$FLASH_DIR/crail-bench-dd.img" bs=1M count="$count" oflag=direct 2>&1 | tail -n 1 | awk '{print $(NF-1), $NF}'), read $(dd if="$FLASH_DIR/crail-bench-dd.img" of=/dev/null bs=1M iflag=direct 2>&1 | tail -n 1 | awk '{print $(NF-1), $NF}') | | | | | | | |"
  rm -f "$FLASH_DIR/crail-bench-dd.img"
}
for class in 0 1; do
  [ "$class" = 1 ] && dd_pair before
  row 1 write "$class" 1MiB 1 "$R" "$SIZE"
  row 1 read "$class" 1MiB 1 "$R" "$SIZE"
  row 1 writeAsync "$class" 1MiB 4 "$R" "$SIZE"
  row 1 readAsync "$class" 1MiB 4 "$R" "$SIZE"
  row 1 readRandom "$class" 4KiB 1 20000 256MiB
done
# Same host: the client shares the datanode's address (dram on .2, flash on .3).
row 2 write 0 1MiB 1 "$R" "$SIZE"
row 2 read 0 1MiB 1 "$R" "$SIZE"
row 2 writeAsync 0 1MiB 4 "$R" "$SIZE"
row 2 readAsync 0 1MiB 4 "$R" "$SIZE"
row 2 readRandom 0 4KiB 1 20000 256MiB
row 3 writeAsync 1 1MiB 4 "$R" "$SIZE"
row 3 readAsync 1 1MiB 4 "$R" "$SIZE"
dd_pair after

