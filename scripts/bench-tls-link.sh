#!/usr/bin/env bash
# What TLS costs on a real, rate-limited link (run as root): a namenode and a DRAM datanode in
# a network namespace of their own behind a veth pair shaped to RATE each way (`tc tbf`, MTU
# 9000), `crail iobench` from the root namespace (512 MiB, 1 MiB buffers, 4 in flight, 3 runs
# per figure), in the clear and over TLS, alternating. The TLS files are made with `openssl`
# as SECURITY.md tells an operator to. Removes the namespace and the link when done.
#
#   ./scripts/bench-tls-link.sh                 # 10gbit, 3 rounds
#   RATE=25gbit ROUNDS=1 ./scripts/bench-tls-link.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-10gbit}
ROUNDS=${ROUNDS:-3}
NS=crail-tls-bench
HOST_IF=crtls-h
NS_IF=crtls-n
SERVER=10.77.0.1
CLIENT=10.77.0.2

cargo build --release --locked -q -p crail-cli
crail=$PWD/target/release/crail
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip link del "$HOST_IF" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The link: 10.77.0.2 (here) <-> 10.77.0.1 (the namespace), RATE each way.
ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF"
ip link set "$NS_IF" netns "$NS"
ip addr add "$CLIENT/24" dev "$HOST_IF"
ip link set "$HOST_IF" mtu 9000 up
ip netns exec "$NS" ip addr add "$SERVER/24" dev "$NS_IF"
ip netns exec "$NS" ip link set "$NS_IF" mtu 9000 up
ip netns exec "$NS" ip link set lo up
tc qdisc add dev "$HOST_IF" root tbf rate "$RATE" burst 4mb latency 20ms
ip netns exec "$NS" tc qdisc add dev "$NS_IF" root tbf rate "$RATE" burst 4mb latency 20ms

# An authority and a certificate naming the server's address, with openssl.
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=crail bench CA" -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$SERVER" \
    -keyout node.key -out node.csr 2>/dev/null
  printf "subjectAltName=IP:%s\nextendedKeyUsage=serverAuth,clientAuth\n" "$SERVER" >ext.cnf
  openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -out node.pem -extfile ext.cnf 2>/dev/null
)
printf '[security]\ntls_ca = "%s/ca.pem"\ntls_cert = "%s/node.pem"\ntls_key = "%s/node.key"\n' \
  "$work" "$work" "$work" >"$work/server-tls.toml"
: >"$work/server-plain.toml"

wait_line() { # file pattern
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no '$2' in $1:"; cat "$1" "${1%.out}.log" 2>/dev/null; exit 1
}

# One namenode and datanode per mode, both in the namespace.
for mode in plain tls; do
  ip netns exec "$NS" "$crail" namenode --config "$work/server-$mode.toml" --listen "$SERVER:0" \
    >"$work/nn-$mode.out" 2>"$work/nn-$mode.log" &
  pids+=($!)
  wait_line "$work/nn-$mode.out" 'listening on'
  nn=$(sed -n 's/^namenode listening on //p' "$work/nn-$mode.out")
  ip netns exec "$NS" "$crail" datanode --config "$work/server-$mode.toml" --namenode "$nn" \
    --listen "$SERVER:0" --tier dram --capacity 1GiB >"$work/dn-$mode.out" 2>"$work/dn-$mode.log" &
  pids+=($!)
  wait_line "$work/dn-$mode.out" 'listening on'
  printf '[client]\nnamenode = "%s"\nlocal_host = "%s"\n' "$nn" "$CLIENT" >"$work/client-$mode.toml"
  if [ "$mode" = tls ]; then
    printf '\n[security]\ntls_ca = "%s/ca.pem"\n' "$work" >>"$work/client-$mode.toml"
  fi
done

echo "link: $RATE each way, MTU 9000, $CLIENT -> $SERVER"
field() { python3 -c "import json,sys; print(round(json.loads(sys.stdin.readlines()[-1])['$1']))"; }
for round in $(seq "$ROUNDS"); do
  for mode in plain tls; do
    cfg="$work/client-$mode.toml"
    w=$("$crail" iobench --config "$cfg" -t writeAsync -s 512MiB -b 1MiB -o 4 -k 3 --json | field mb_per_sec)
    r=$("$crail" iobench --config "$cfg" -t readAsync -s 512MiB -b 1MiB -o 4 -k 3 --json | field mb_per_sec)
    echo "round $round $mode: write $w MB/s, read $r MB/s"
  done
done
