# Sourced by the cluster benchmarks: builds the release `crail`, starts a 3-node
# `crail cluster` with DRAM bytes of DRAM per node (each node its own process on 127.0.0.2-4,
# with its datanode and its shuffle and broadcast services), and stops it on exit. Leaves the
# client configuration in "$work/client.toml" and the binary in "$bin".
cargo build --release --locked -q -p crail-cli
bin=target/release
work=$(mktemp -d)
cluster=
cleanup() {
  if [ -n "$cluster" ]; then
    kill "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/crail" cluster --nodes 3 --dram "$DRAM" --listen 127.0.0.1:0 \
  --config-out "$work/client.toml" >"$work/cluster.out" 2>"$work/cluster.log" &
cluster=$!
for _ in $(seq 600); do
  grep -q '^cluster up' "$work/cluster.out" 2>/dev/null && break
  if ! kill -0 "$cluster" 2>/dev/null; then
    echo "the cluster did not start:"; cat "$work/cluster.out" "$work/cluster.log"; exit 1
  fi
  sleep 0.1
done
grep -q '^cluster up' "$work/cluster.out" || { echo "the cluster did not come up in 60 s"; exit 1; }
