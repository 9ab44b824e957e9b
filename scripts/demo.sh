#!/usr/bin/env bash
# A three-broker mosquitto-ha cluster on loopback: three unmodified Mosquitto brokers, an agent
# beside each, a subscriber on b2, a publisher on b1. It shows a message crossing from b1 to b2
# and not to b3, whose clients want nothing, then runs until Ctrl-C (or --for 30s).
#
#   scripts/demo.sh [--for DURATION] [--base-port 18831]
set -euo pipefail
cd "$(dirname "$0")/.."

run_for=""
base=18831
while [ $# -gt 0 ]; do
  case "$1" in
    --for) run_for="$2"; shift 2 ;;
    --base-port) base="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "demo.sh: needs ${need[*]}: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "== installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

work=$(mktemp -d /tmp/mosquitto-ha-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "== building mosquitto-ha"
go build -o "$work/mosquitto-ha" ./cmd/mosquitto-ha
ha="$work/mosquitto-ha"

cat >"$work/cluster.yaml" <<EOF
cluster: demo
nodes:
  - {name: b1, address: 127.0.0.1:$base}
  - {name: b2, address: 127.0.0.1:$((base + 1))}
  - {name: b3, address: 127.0.0.1:$((base + 2))}
agent:
  state_dir: $work/state
EOF
"$ha" check --config "$work/cluster.yaml"

for i in 1 2 3; do
  port=$((base + i - 1))
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "demo.sh: port $port is taken; pick others with --base-port" >&2; exit 1
  fi
  mkdir -p "$work/b$i"
  { echo "user root"; echo "allow_anonymous true"; echo "listener $port 127.0.0.1"
    echo "persistence_location $work/b$i/"
    "$ha" mosquitto --config "$work/cluster.yaml" --node "b$i" --broker-conf "$work/b$i/mosquitto.conf" 2>/dev/null | grep -v '^listener'
  } >"$work/b$i/mosquitto.conf"
  "$MOSQUITTO" -c "$work/b$i/mosquitto.conf" >"$work/b$i/mosquitto.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$((base + i - 1))) 2>/dev/null && break; sleep 0.1; done
done
echo "== three Mosquitto brokers on 127.0.0.1:$base-$((base + 2)) (configured by \`mosquitto-ha mosquitto\`)"

for i in 1 2 3; do
  "$ha" agent --config "$work/cluster.yaml" --node "b$i" >"$work/agent-b$i.log" 2>&1 &
  pids+=($!)
done
echo "== three agents started; waiting until each knows its broker's clients"
for i in 1 2 3; do
  for _ in $(seq 150); do grep -q "advertising exact interest" "$work/agent-b$i.log" && break; sleep 0.1; done
done

mosquitto_sub -h 127.0.0.1 -p $((base + 1)) -i demo-sub-b2 -t 'demo/#' -v -q 1 >"$work/sub-b2.out" &
pids+=($!)
sleep 1
echo "== a client of b2 subscribed to demo/#; b3's clients want nothing"
mosquitto_pub -h 127.0.0.1 -p "$base" -i demo-pub-b1 -t demo/hello -m "hello from b1" -q 1
for _ in $(seq 50); do [ -s "$work/sub-b2.out" ] && break; sleep 0.1; done
echo "== published demo/hello on b1; the subscriber on b2 received:"
sed 's/^/   /' "$work/sub-b2.out"
sleep 2.5 # agents refresh their status every 2 s
echo "== the cluster (mosquitto-ha status): b1 relayed 1 message, to b2 only"
"$ha" status --config "$work/cluster.yaml" || true
"$ha" status --config "$work/cluster.yaml" --json | python3 -c '
import json, sys
for n in json.load(sys.stdin):
    a = n.get("agent") or {}
    if n["node"] == "b1":
        for p in a.get("peers", []):
            print("   b1 -> %s: %d relayed" % (p["name"], p["relayed"]))
' 2>/dev/null || true

if [ -n "$run_for" ]; then
  echo "== running for $run_for (logs in $work)"
  sleep "$run_for"
else
  echo "== running; publish with: mosquitto_pub -p $base -t demo/x -m hi   (Ctrl-C to stop)"
  while true; do sleep 3600; done
fi
