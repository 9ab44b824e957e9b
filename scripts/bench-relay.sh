#!/usr/bin/env bash
# Relay throughput on loopback, three setups measured in one run with the same load:
#   single   one broker: publishers and subscriber on it (the ceiling)
#   native   broker A bridged to broker B by Mosquitto's own bridge (topic # out), publishers on A,
#            subscriber on B
#   ha       brokers A and B with a mosquitto-ha agent each, publishers on A, subscriber on B
# For each: end-to-end delivery rate at the subscriber, latency p50/p99, loss, duplicates, and
# CPU microseconds per delivered message of brokers (and agents). Medians of --runs runs, and the
# ratios ha/native. Bounded: every run stops by itself.
#
#   scripts/bench-relay.sh [--runs 3] [--publishers 20] [--count 3000] [--size 100] [--qos 1]
#                          [--json FILE] [--smoke] [--broker-conf 'max_inflight_messages 1000']
#                          [--agent-conf 'read_pause: -1ms']
set -euo pipefail
cd "$(dirname "$0")/.."

runs=3 pubs=20 count=3000 size=100 qos=1 json="" base=19400 brokerconf="" agentconf=""
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --publishers) pubs="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --qos) qos="$2"; shift 2 ;;
    --json) json="$2"; shift 2 ;;
    --base-port) base="$2"; shift 2 ;;
    --broker-conf) brokerconf="$2"; shift 2 ;;  # extra mosquitto.conf lines for every broker of every setup
    --agent-conf) agentconf="$2"; shift 2 ;;    # extra lines under agent: in the ha setup's cluster file
    --smoke) runs=1 pubs=2 count=500; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-relay.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { echo "bench-relay.sh: apt-get install -y mosquitto" >&2; exit 1; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

work=$(mktemp -d /tmp/mha-bench-relay.XXXXXX)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'stop_all; rm -rf "$work"' EXIT
go build -o "$work/mosquitto-ha" ./cmd/mosquitto-ha
go build -o "$work/mqbench" ./scripts/cmd/mqbench

broker() { # name port extra-conf
  local d="$work/$1"; mkdir -p "$d"
  printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\nmax_queued_messages 1000000\nsys_interval 1\n%s\n%s\n' "$2" "$brokerconf" "$3" >"$d/mosquitto.conf"
  if (exec 3<>/dev/tcp/127.0.0.1/$2) 2>/dev/null; then
    echo "bench-relay.sh: port $2 is already in use; pick another --base-port" >&2; exit 1
  fi
  "$MOSQUITTO" -c "$d/mosquitto.conf" >"$d/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    kill -0 "${pids[-1]}" 2>/dev/null || break
    (exec 3<>/dev/tcp/127.0.0.1/$2) 2>/dev/null && return
    sleep 0.05
  done
  echo "bench-relay.sh: broker $1 did not start: $(cat "$d/log")" >&2; exit 1
}
cpu_ticks() { # utime+stime of each given pid, in clock ticks, comma-separated
  local out=""; for p in "$@"; do out="$out${out:+,}$(awk '{print $14 + $15}' "/proc/$p/stat")"; done; echo "$out"
}
hz=$(getconf CLK_TCK)

logconf=$'log_dest topic\nlog_type error\nlog_type notice\nlog_type subscribe\nlog_type unsubscribe'

# run SETUP RUN: starts the setup, runs mqbench, prints one JSON line with the figures.
run() {
  local setup=$1 mode=$2 a=$base b=$((base + 1))
  case "$setup" in
    single)
      broker a $a ""; sub=$a; names=(broker-a) ;;
    native)
      broker b $b ""
      broker a $a "$(printf 'connection to-b\naddress 127.0.0.1:%s\ntopic # out 2\ncleansession true\ntry_private true\nbridge_protocol_version mqttv311' "$b")"
      sub=$b; names=(broker-b broker-a) ;;
    ha)
      broker a $a "$logconf"; broker b $b "$logconf"
      printf 'cluster: bench\nnodes:\n  - {name: a, address: 127.0.0.1:%s}\n  - {name: b, address: 127.0.0.1:%s}\nagent:\n  state_dir: %s/state\n' $a $b "$work" >"$work/cluster.yaml"
      [ -n "$agentconf" ] && printf '  %s\n' "$agentconf" >>"$work/cluster.yaml"
      rm -rf "$work/state"
      "$work/mosquitto-ha" agent --config "$work/cluster.yaml" --node a >"$work/agent-a.log" 2>&1 & pids+=($!)
      "$work/mosquitto-ha" agent --config "$work/cluster.yaml" --node b >"$work/agent-b.log" 2>&1 & pids+=($!)
      for _ in $(seq 200); do grep -q "advertising exact interest" "$work/agent-a.log" && grep -q "advertising exact interest" "$work/agent-b.log" && break; sleep 0.05; done
      for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "bench-relay.sh: a process of the ha setup died:" >&2; for f in "$work"/agent-*.log; do echo "-- $f" >&2; tail -n 20 "$f" >&2; done; stop_all; exit 1; }
      done
      sub=$b; names=(broker-a broker-b agent-a agent-b) ;;
  esac
  sleep 0.5 # the native bridge connects, the agents settle
  local before; before=$(cpu_ticks "${pids[@]}")
  local rate_args=()
  [ "$mode" = latency ] && rate_args=(--rate 200)
  # The subscriber connects first; mqbench waits for its SUBACK before publishing. With mosquitto-ha
  # the subscription must reach agent a first: mqbench's own setup plus this pause covers it.
  local n=$count p=$pubs
  [ "$mode" = latency ] && n=$((count / 10)) p=1
  "$work/mqbench" --json -q --pub-brokers 127.0.0.1:$a --sub-brokers 127.0.0.1:$sub --publishers "$p" \
    --count "$n" --size "$size" --qos "$qos" --topic bench/1 --sub-topics bench/1 --timeout 120s --drain 30s \
    --settle 300ms "${rate_args[@]}" >"$work/out.json"
  local after; after=$(cpu_ticks "${pids[@]}")
  python3 - "$work/out.json" "$setup" "$before" "$after" "$hz" "${names[*]}" "$mode" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
setup, hz, mode = sys.argv[2], int(sys.argv[5]), sys.argv[7]
before = [int(x) for x in sys.argv[3].split(",")]
after = [int(x) for x in sys.argv[4].split(",")]
names = sys.argv[6].split()
n = max(r["received_distinct"], 1)
per = {name: (a - b) / hz * 1e6 / n for name, a, b in zip(names, after, before)}
print(json.dumps({"setup": setup, "mode": mode, "delivery_rate": r["delivery_rate"], "publish_rate": r["publish_rate"],
  "p50_ms": r["latency_p50_ms"], "p99_ms": r["latency_p99_ms"], "lost": r["lost"], "duplicates": r["duplicates"],
  "received": r["received_distinct"], "expected": r["expected"], "cpu_us_per_msg": sum(per.values()),
  "bottleneck_us_per_msg": max(per.values()), "cpu_by_process": per}))
PY
  stop_all
}

results="$work/results.jsonl"
: >"$results"
for i in $(seq "$runs"); do
  for mode in throughput latency; do
    for s in single native ha; do
      run "$s" "$mode" | tee -a "$results" >&2
    done
  done
done

python3 - "$results" "$runs" "$pubs" "$count" "$size" "$qos" "${json:-}" "$brokerconf" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
runs, pubs, count, size, qos, out, brokerconf = sys.argv[2:9]
med = {}
for mode in ("throughput", "latency"):
    for s in ("single", "native", "ha"):
        rs = [r for r in rows if r["setup"] == s and r["mode"] == mode]
        m = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("setup", "mode", "cpu_by_process")}
        m["cpu_by_process"] = {p: statistics.median(r["cpu_by_process"][p] for r in rs) for p in rs[0]["cpu_by_process"]}
        med[mode + "/" + s] = m
print(f"relay benchmark on loopback, {sys.argv[1] and ''}medians of {runs} run(s), QoS {qos}, {size} B payloads"
      + (f", every broker with: {brokerconf}" if brokerconf else ", brokers with Mosquitto's defaults"))
print(f"throughput: {pubs} publishers x {count} messages as fast as possible")
print(f"{'setup':8} {'deliveries/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'dup':>4} {'CPU us/msg':>10} {'busiest process us/msg':>24}")
for s in ("single", "native", "ha"):
    m = med["throughput/" + s]
    busiest = max(m["cpu_by_process"], key=m["cpu_by_process"].get)
    print(f"{s:8} {m['delivery_rate']:12.0f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} {m['lost']:5.0f} {m['duplicates']:4.0f} {m['cpu_us_per_msg']:10.1f} {m['bottleneck_us_per_msg']:15.1f} ({busiest})")
print(f"latency: 1 publisher x {int(count) // 10} messages at 200 msg/s")
print(f"{'setup':8} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5}")
for s in ("single", "native", "ha"):
    m = med["latency/" + s]
    print(f"{s:8} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} {m['lost']:5.0f}")
t = lambda s, k: med["throughput/" + s][k]
ratio = t("ha", "delivery_rate") / t("native", "delivery_rate")
cpu = t("ha", "cpu_us_per_msg") / t("native", "cpu_us_per_msg")
bott = t("native", "bottleneck_us_per_msg") / t("ha", "bottleneck_us_per_msg")
added = med["latency/ha"]["p50_ms"] - med["latency/single"]["p50_ms"]
print(f"ha/native: throughput {ratio:.2f}x, CPU per message {cpu:.2f}x, "
      f"throughput bound of the busiest process {bott:.2f}x; latency added to a single broker: {added:.3f} ms p50")
if out:
    json.dump({"params": {"runs": int(runs), "publishers": int(pubs), "count": int(count), "size": int(size), "qos": int(qos), "broker_conf": brokerconf},
               "median": med, "runs": rows, "ratio_throughput": ratio, "ratio_cpu": cpu, "ratio_bottleneck": bott,
               "added_latency_p50_ms": added}, open(out, "w"), indent=2)
PY
