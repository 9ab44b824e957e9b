#!/usr/bin/env bash
# Profiles the agents under one workload of scripts/bench-reference.sh, in a lab of its own
# (scripts/lab.sh up --brokers 2): CPU profiles of both agents (--cpuprofile, written when they
# stop), and per phase (start, ready = subscriptions in place, done = last message arrived) the
# CPU ticks, read and write system calls (/proc/PID/io syscr, syscw) and context switches
# (voluntary, involuntary; summed over threads) of every agent and broker. Needs root, as lab.sh.
#
#   scripts/lab-profile.sh local|reference-qos0|reference-qos1 OUTDIR
# Then: go tool pprof -top OUTDIR/mosquitto-ha OUTDIR/b1.*.pprof
# Environment: GOMAXPROCS is passed to the agents (and only to them) when set; PERF=1 also
# records b1's agent with `perf record -g` (kernel stacks included) during the publish phase;
# MHA_LAB_READ_PAUSE=-1ms runs the agents without read pacing (lab.sh).
# Prints, per agent and broker, CPU, read and write calls and context switches per message.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
wl=$1 out=$(realpath -m "$2")
case $wl in
  local) subs=198.18.0.21:1883 pubs=198.18.0.21:1883 qos=0 ;;
  reference-qos0) subs=198.18.0.21:1883,198.18.0.22:1883 pubs=198.18.0.100:1883 qos=0 ;;
  reference-qos1) subs=198.18.0.21:1883,198.18.0.22:1883 pubs=198.18.0.100:1883 qos=1 ;;
  *) echo "lab-profile.sh: unknown workload $wl" >&2; exit 2 ;;
esac
mkdir -p "$out"
go build -o "$out/mosquitto-ha" ./cmd/mosquitto-ha
go build -o "$out/mqbench" ./scripts/cmd/mqbench
export MHA_LAB_DIR=${MHA_LAB_DIR:-/tmp/mha-lab-profile} MHA_BIN=$out/mosquitto-ha MHA_AGENT_CPUPROFILE=$out
LAB=$MHA_LAB_DIR
procs=${GOMAXPROCS:-}
unset GOMAXPROCS
trap 'bash scripts/lab.sh down >/dev/null 2>&1 || true' EXIT
GOMAXPROCS=$procs bash scripts/lab.sh up --brokers 2 >"$out/lab-up.log" 2>&1 || { tail "$out/lab-up.log" >&2; exit 1; }

snap() { # PHASE
  local b n pid
  for b in b1 b2; do
    for n in agent mosquitto; do
      pid=$(cat "$LAB/pids/$b.$n.pid")
      echo "$1 $b.$n ticks $(awk '{print $14 + $15}' "/proc/$pid/stat")" \
        "ctxt $(cat /proc/"$pid"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}')" \
        "$(awk '/^syscr|^syscw/ {printf "%s %s ", $1, $2}' "/proc/$pid/io")"
    done
  done >>"$out/counters.txt"
}
await() { while [ "$(cat "$out/phase" 2>/dev/null)" != "$1" ]; do sleep 0.05; done; }

: >"$out/counters.txt"
snap start
ip netns exec mha-client "$out/mqbench" --json -q --phase-file "$out/phase" \
  --sub-brokers "$subs" --subscribers 500 --sub-topic-pattern 'test_1/%d' \
  --pub-brokers "$pubs" --publishers 20 --count 3000 --size 100 --qos "$qos" \
  --topic test_1/1 --settle 1s --timeout 180s --drain 10s >"$out/mqbench.json" 2>"$out/mqbench.err" &
mp=$!
await ready
snap ready
perf_pid=""
if [ "${PERF:-}" = 1 ]; then
  perf record -q -g -o "$out/perf.data" -p "$(cat "$LAB/pids/b1.agent.pid")" >/dev/null 2>&1 &
  perf_pid=$!
fi
rm -f "$out/phase"
await done
snap done
[ -n "$perf_pid" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
rm -f "$out/phase"
wait "$mp" || true
for b in b1 b2; do MHA_KILL_SIGNAL=TERM bash scripts/lab.sh fault kill-agent "$b" >/dev/null; done
echo "counters: $out/counters.txt; profiles: $(ls "$out"/*.pprof | tr '\n' ' ')"
# Per published message (20 x 3000), publish phase (ready -> done); CPU from clock ticks.
hz=$(getconf CLK_TCK)
awk -v hz="$hz" -v n=60000 '{ t[$1, $2] = $4; c[$1, $2] = $6 + $7; r[$1, $2] = $9; w[$1, $2] = $11; p[$2] = 1 }
  END { for (x in p) printf "%-13s CPU %6.1f us/msg  reads %.2f  writes %.2f  context switches %.2f per msg\n", x,
          (t["done", x] - t["ready", x]) / hz * 1e6 / n, (r["done", x] - r["ready", x]) / n,
          (w["done", x] - w["ready", x]) / n, (c["done", x] - c["ready", x]) / n }' "$out/counters.txt" | sort
python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print("deliveries/s %.0f, lost %d, duplicates %d" % (j["delivery_rate"], j["lost"], j["duplicates"]))' "$out/mqbench.json"
