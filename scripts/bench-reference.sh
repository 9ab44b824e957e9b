#!/usr/bin/env bash
# The reference study's experiment (chapter 5) in the lab of network namespaces (scripts/lab.sh),
# three setups measured in one run with the same load:
#   single   one broker: b1 of the mosquitto-ha lab with both agents stopped, every client on it
#   native   two brokers joined by Mosquitto's own bridge (`topic # both`), HAProxy round robin
#            (`lab.sh up --native`: the study's method 1)
#   ha       two brokers with a mosquitto-ha agent each, HAProxy hashing the client id
# Workloads (clients run in mha-client; subscribers connect to the brokers directly, alternating
# b1, b2, ...; publishers through the VIP, where a setup has one):
#   reference-qos1  500 subscribers on test_1/0..499, 20 publishers x 3000 x 100 B to test_1/1, QoS 1
#   reference-qos0  the same at QoS 0 (the study's bandwidth test)
#   local           the same at QoS 0 with every client on b1: no publish has a remote subscriber
#   wildcard        three brokers (`lab.sh up --brokers 3`): test_1/+, test_1/#, # and the non-matching
#                   test_2/# on each of b1..b3, 20 publishers x 1000 (--wild-count) through the VIP, QoS 1
#   sessions        reference-qos1 with persistent subscribers (clean session 0), on the ha setup
#                   twice: with session replicas (agent.sessions, the default: each subscriber's
#                   session has a replica on the other broker, made before publishing starts) and
#                   in a lab of its own without them (setup ha-nosess, MHA_LAB_SESSIONS=off): what
#                   replicas cost in bytes between brokers and CPU
# --unpaced adds the setup ha-unpaced to every workload but sessions: the ha lab with
# agent.read_pause -1ms (MHA_LAB_READ_PAUSE), each agent connection reading every packet at once,
# as before read pacing: the before and after of issue 15 in one run.
# For each: publish and delivery rates, latency, loss, duplicates (mqbench), bytes between the
# broker hosts measured by nftables counters in every broker namespace (each pair, each direction,
# split into the subscribe, publish and disconnect phases) and by iftop on b1 (text mode, as the
# study did), the floor (the bytes that had to cross), CPU per message of brokers, agents and
# HAProxy. Medians of --runs runs; --json FILE keeps every figure. Every run stops by itself; the
# lab is always taken down at exit. Needs root (the lab's hosts are network namespaces).
#
#   scripts/bench-reference.sh [--runs 3] [--publishers 20] [--count 3000] [--size 100]
#        [--subscribers 500] [--wild-count 1000] [--no-wildcard] [--no-sessions] [--sessions-only] [--no-iftop]
#        [--unpaced]
#        [--json FILE] [--smoke] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

orig_args=("$@")
runs=3 pubs=20 count=3000 size=100 nsubs=500 wcount=1000 wildcard=1 sessions=1 sessions_only=0 iftop=1 unpaced=0 json="" smoke=0 keep=0
settle=1s post=2.2 teardown=1.5
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --publishers) pubs="$2"; shift 2 ;;
    --count) count="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    --subscribers) nsubs="$2"; shift 2 ;;
    --wild-count) wcount="$2"; shift 2 ;;
    --no-wildcard) wildcard=0; shift ;;
    --no-sessions) sessions=0; shift ;;
    --sessions-only) sessions_only=1; shift ;; # only the sessions workload (both setups)
    --no-iftop) iftop=0; shift ;;
    --unpaced) unpaced=1; shift ;;
    --json) json="$2"; shift 2 ;;
    --keep) keep=1; shift ;; # keep the raw files of every run (printed at exit)
    # seconds: every setup and workload once, tiny counts; no agent counters (they need 2 s waits)
    --smoke) smoke=1 runs=1 pubs=4 count=250 nsubs=40 wcount=100 post=0.2 teardown=0.5; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench-reference.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
for v in runs pubs count size nsubs wcount; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "bench-reference.sh: --${v} wants a positive integer" >&2; exit 2; }
done
[ "$nsubs" -ge 2 ] || { echo "bench-reference.sh: --subscribers wants at least 2 (they alternate between brokers)" >&2; exit 2; }
[ "$size" -ge 32 ] || { echo "bench-reference.sh: --size wants at least 32 (mqbench's header and run id)" >&2; exit 2; }

die() { echo "bench-reference.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root: the lab's hosts are network namespaces, and nftables and iftop count their traffic. Run: sudo $0 ${orig_args[*]}"
missing=()
for t in ip nft iftop mosquitto haproxy keepalived python3 go timeout setsid; do
  command -v "$t" >/dev/null || missing+=("$t")
done
[ ${#missing[@]} -eq 0 ] ||
  die "missing ${missing[*]}: apt-get install -y nftables iftop mosquitto mosquitto-clients haproxy keepalived iproute2 python3 (and Go 1.26)"
if ip netns list | grep -qE '^mha-' || ip link show mha-br0 >/dev/null 2>&1; then
  die "a lab is up (mha-* namespaces): only one lab may run at a time; remove it with scripts/lab.sh down"
fi

export MHA_LAB_DIR=${MHA_LAB_DIR:-/tmp/mha-bench-ref}
LAB=$MHA_LAB_DIR
NET=198.18.0
VIP=$NET.100
PORT=1883
work=$(mktemp -d /tmp/mha-bench-reference.XXXXXX)
lab_started=0 bg=()
cleanup() {
  local p
  for p in "${bg[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${bg[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$lab_started" = 1 ]; then bash "$ROOT/scripts/lab.sh" down >/dev/null 2>&1 || echo "bench-reference.sh: lab.sh down failed: run it by hand" >&2; fi
  if [ "$keep" = 1 ]; then echo "bench-reference.sh: raw files kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
say() { echo "bench-reference.sh: $*" >&2; }
t_start=$SECONDS

mkdir -p "$work/bin" "$work/m"
code_commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- cmd bridge sysparse topictree haproxy keepalived scripts 2>/dev/null; then
  code_commit="$code_commit+uncommitted:$(git diff HEAD -- cmd bridge sysparse topictree haproxy keepalived scripts | sha256sum | cut -c1-12)"
fi
go build -o "$work/bin/mosquitto-ha" ./cmd/mosquitto-ha
go build -o "$work/bin/labcheck" ./scripts/cmd/labcheck
go build -o "$work/bin/mqbench" ./scripts/cmd/mqbench
export MHA_BIN=$work/bin/mosquitto-ha MHA_LABCHECK=$work/bin/labcheck
MQB=$work/bin/mqbench
hz=$(getconf CLK_TCK)
ip_of() { echo "$NET.$((20 + ${1#b}))"; }

# ---- the lab ---------------------------------------------------------------------------------

BROKERS=0 NATIVE=0
lab_up() { # N native(0/1)
  BROKERS=$1 NATIVE=$2
  local args=(--brokers "$1") t=$SECONDS
  [ "$2" = 1 ] && args+=(--native)
  lab_started=1
  bash "$ROOT/scripts/lab.sh" up "${args[@]}" >"$work/lab-up.log" 2>&1 || { cat "$work/lab-up.log" >&2; die "lab.sh up ${args[*]} failed"; }
  local i j rules
  # Counters of the traffic between broker hosts, in every broker's namespace, per peer and
  # direction. Priority -300: before anything else could drop or change a packet.
  for ((i = 1; i <= BROKERS; i++)); do
    rules=""
    for ((j = 1; j <= BROKERS; j++)); do
      [ "$i" = "$j" ] && continue
      rules+="counter in_b$j {}; counter out_b$j {};"
    done
    {
      echo "table inet mhabench { $rules"
      echo "  chain in { type filter hook input priority -300; policy accept;"
      for ((j = 1; j <= BROKERS; j++)); do
        [ "$i" != "$j" ] && echo "    ip saddr $(ip_of "b$j") ip daddr $(ip_of "b$i") counter name \"in_b$j\""
      done
      echo "  }"
      echo "  chain out { type filter hook output priority -300; policy accept;"
      for ((j = 1; j <= BROKERS; j++)); do
        [ "$i" != "$j" ] && echo "    ip saddr $(ip_of "b$i") ip daddr $(ip_of "b$j") counter name \"out_b$j\""
      done
      echo "  }"
      echo "}"
    } | ip netns exec "mha-b$i" nft -f - || die "nft: cannot add the counters in mha-b$i"
  done
  say "lab up: $BROKERS brokers$([ "$NATIVE" = 1 ] && echo ", native bridges") in $((SECONDS - t)) s"
}

lab_down() {
  bash "$ROOT/scripts/lab.sh" down >/dev/null 2>&1 || die "lab.sh down failed"
  lab_started=0
}

stop_agents() {
  local i
  for ((i = 1; i <= BROKERS; i++)); do
    MHA_KILL_SIGNAL=TERM bash "$ROOT/scripts/lab.sh" fault kill-agent "b$i" >/dev/null
  done
}

# sessions_settled WANT SECONDS: wait until the agents hold WANT replicas in all and have no
# session job pending (WANT 0: the replicas of a finished run are removed).
sessions_settled() {
  local deadline=$((SECONDS + $2)) got
  while :; do
    got=$(ip netns exec mha-client "$MHA_BIN" status --config "$LAB/cluster.yaml" --json 2>/dev/null | python3 -c '
import json, sys
try:
    nodes = json.load(sys.stdin) or []
except ValueError:
    nodes = []
s = [((n.get("agent") or {}).get("sessions") or {}) for n in nodes]
print(sum(x.get("replicas", 0) for x in s), sum(x.get("pending", 0) for x in s))' || echo "-1 -1")
    if [ "$1" = 0 ] && [ "$got" = "0 0" ] || [ "$1" != 0 ] && [ "${got% *}" -ge "$1" ] 2>/dev/null; then return 0; fi
    [ $SECONDS -ge $deadline ] && { say "session replicas: want $1, have (replicas, pending jobs) $got after $2 s"; return 1; }
    nap 0.5
  done
}

# ---- snapshots -------------------------------------------------------------------------------

# procs: "name pidfile" of the processes whose CPU is counted.
procs() {
  local i
  for ((i = 1; i <= BROKERS; i++)); do
    echo "broker-b$i $LAB/pids/b$i.mosquitto.pid"
    echo "agent-b$i $LAB/pids/b$i.agent.pid"
  done
  echo "haproxy-lb1 $LAB/pids/lb1.haproxy.pid"
  echo "haproxy-lb2 $LAB/pids/lb2.haproxy.pid"
}

cpu_snap() { # FILE [iftop pid]: utime+stime in ticks per running process
  local name f pid
  while read -r name f; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    [ -r "/proc/$pid/stat" ] && echo "$name $(awk '{print $14 + $15}' "/proc/$pid/stat")"
  done < <(procs) >"$1"
  if [ -n "${2:-}" ] && [ -r "/proc/$2/stat" ]; then echo "iftop $(awk '{print $14 + $15}' "/proc/$2/stat")" >>"$1"; fi
}

nft_snap() { # FILE
  local i
  for ((i = 1; i <= BROKERS; i++)); do
    echo "b$i $(ip netns exec "mha-b$i" nft -j list counters table inet mhabench)"
  done >"$1"
}

ha_snap() { # FILE: per HAProxy, sessions so far per server (stot)
  python3 - "$1" "$LAB" <<'PY'
import socket, sys, os
out = open(sys.argv[1], "w")
for lb in ("lb1", "lb2"):
    path = os.path.join(sys.argv[2], lb, "admin.sock")
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        s.connect(path)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            x = s.recv(65536)
            if not x:
                break
            data += x
    except OSError:
        continue
    lines = data.decode().splitlines()
    cols = lines[0][2:].split(",")
    for l in lines[1:]:
        f = l.split(",")
        if len(f) == len(cols) and f[1] not in ("FRONTEND", "BACKEND"):
            print(lb, f[1], f[cols.index("stot")], file=out)
PY
}

status_snap() { # FILE: the agents' own counters (only with agents, not in --smoke)
  if [ "$smoke" = 0 ] && [ "$NATIVE" = 0 ] && [ -f "$LAB/pids/b1.agent.pid" ]; then
    ip netns exec mha-client "$MHA_BIN" status --config "$LAB/cluster.yaml" --json >"$1" 2>/dev/null || echo '[]' >"$1"
  else
    echo '[]' >"$1"
  fi
}

# nap SECONDS: sleep without starting a process (the polls below must not load the 2 cores).
exec {napfd}<> <(:)
nap() { read -rt "$1" -u "$napfd" _ || true; }

# await_phase FILE WORD PID: wait for mqbench (PID) to write WORD to its phase file. Builtins
# only, 20 polls a second: nothing waits on this but the script itself.
await_phase() {
  local line=""
  while :; do
    if [ -f "$1" ]; then read -r line <"$1" || true; [ "$line" = "$2" ] && return 0; fi
    kill -0 "$3" 2>/dev/null || return 1
    nap 0.05
  done
}

# iftop_final OUT FD T: make iftop print totals that cover everything until time T, then quit.
# iftop adds up its totals when it redraws, at most every 2 s (of time(2)), and "u" redraws at
# once: 3 s after T the redraw "u" asks for is a fresh one.
iftop_final() {
  local wait n i
  wait=$(awk -v t="$3" -v now="$EPOCHREALTIME" 'BEGIN { w = t + 3.05 - now; print (w > 0 ? w : 0) }')
  sleep "$wait"
  n=$(grep -c '^Cumulative' "$1" || true)
  printf u >&"$2" || return 0
  for ((i = 0; i < 100; i++)); do
    [ "$(grep -c '^Cumulative' "$1" || true)" -gt "$n" ] && break
    sleep 0.02
  done
  printf q >&"$2" || true
}

# ---- one measurement -------------------------------------------------------------------------

# measure SETUP WORKLOAD RUN: one mqbench run with its counters; appends a JSON line to results.
measure() {
  local setup=$1 wl=$2 run=$3 d qos n subs_n i
  d="$work/m/$wl-$setup-$run"
  mkdir -p "$d"
  local b1 sub_brokers="" pub_brokers=$VIP:$PORT topics=() pattern="" n=$count
  b1="$(ip_of b1):$PORT"
  for ((i = 1; i <= BROKERS; i++)); do sub_brokers+="${sub_brokers:+,}$(ip_of "b$i"):$PORT"; done
  case "$wl" in
    reference-qos1) qos=1 subs_n=$nsubs pattern='test_1/%d' ;;
    reference-qos0) qos=0 subs_n=$nsubs pattern='test_1/%d' ;;
    local) qos=0 subs_n=$nsubs pattern='test_1/%d' sub_brokers=$b1 pub_brokers=$b1 ;;
    sessions) qos=1 subs_n=$nsubs pattern='test_1/%d' ;;
    wildcard) qos=1 n=$wcount subs_n=12
      topics=(test_1/+ test_1/+ test_1/+ 'test_1/#' 'test_1/#' 'test_1/#' '#' '#' '#' 'test_2/#' 'test_2/#' 'test_2/#') ;;
  esac
  # The study: for one broker, every client connects to it directly.
  [ "$setup" = single ] && sub_brokers=$b1 pub_brokers=$b1
  local sub_args=()
  [ "$wl" = sessions ] && sub_args+=(--sub-persistent)
  if [ -n "$pattern" ]; then sub_args+=(--sub-topic-pattern "$pattern"); else sub_args+=(--sub-topics "$(IFS=,; echo "${topics[*]}")"); fi
  python3 -c 'import json,sys; a=sys.argv; print(json.dumps({"setup":a[1],"workload":a[2],"run":int(a[3]),"brokers":int(a[4]),"native":a[5]=="1","qos":int(a[6]),"publishers":int(a[7]),"count":int(a[8]),"size":int(a[9]),"subscribers":int(a[10]),"sub_brokers":a[11].split(","),"pub_brokers":a[12].split(","),"pattern":a[13],"sub_topics":[t for t in a[14].split(",") if t],"topic":"test_1/1"}))' \
    "$setup" "$wl" "$run" "$BROKERS" "$NATIVE" "$qos" "$pubs" "$n" "$size" "$subs_n" "$sub_brokers" "$pub_brokers" "$pattern" "$(IFS=,; echo "${topics[*]}")" >"$d/meta.json"

  status_snap "$d/status-start.json"
  ha_snap "$d/ha-start.txt"
  nft_snap "$d/nft-start.txt"
  local ipid="" peers="" ifd=""
  if [ "$iftop" = 1 ] && [ "$setup" != single ] && { [ "$smoke" = 0 ] || [ "$wl" = reference-qos0 ]; }; then
    for ((i = 2; i <= BROKERS; i++)); do peers+="${peers:+ or }host $(ip_of "b$i")"; done
    # Text mode, bounded in time. It reads keys from stdin ("u" prints the totals now, "q"
    # quits) and spins on end of file, so its stdin is a pipe we hold open until the end.
    mkfifo "$d/iftop.in"
    ip netns exec mha-b1 timeout -s INT 300 stdbuf -oL iftop -t -n -N -P -B -i eth0 -f "$peers" -L 40 \
      <"$d/iftop.in" >"$d/iftop.txt" 2>"$d/iftop.err" &
    ipid=$!
    bg+=("$ipid")
    exec {ifd}>"$d/iftop.in"
    for ((i = 0; i < 200; i++)); do grep -q '^interface:' "$d/iftop.err" 2>/dev/null && break; sleep 0.02; done
    sleep 0.2
  fi
  cpu_snap "$d/cpu-start.txt" "$(pgrep -P "$ipid" iftop 2>/dev/null || true)"
  ip netns exec mha-client "$MQB" --json -q --phase-file "$d/phase" \
    --sub-brokers "$sub_brokers" --subscribers "$subs_n" "${sub_args[@]}" \
    --pub-brokers "$pub_brokers" --publishers "$pubs" --count "$n" --size "$size" --qos "$qos" \
    --topic test_1/1 --settle "$settle" --timeout 180s --drain 10s >"$d/mqbench.json" 2>"$d/mqbench.err" &
  local mpid=$!
  bg+=("$mpid")
  local ifpid=""
  [ -n "$ipid" ] && ifpid=$(pgrep -P "$ipid" iftop 2>/dev/null || true)
  if await_phase "$d/phase" ready "$mpid"; then
    # With replicas, every subscriber's session has its replica on the other broker before the
    # counters start: what is measured is their steady cost, not their making.
    if [ "$wl" = sessions ] && [ "$setup" = ha ]; then sessions_settled "$subs_n" 120 || true; fi
    nft_snap "$d/nft-ready.txt"
    cpu_snap "$d/cpu-ready.txt" "$ifpid"
    rm -f "$d/phase"
    if await_phase "$d/phase" "done" "$mpid"; then
      local t_done=$EPOCHREALTIME
      cpu_snap "$d/cpu-done.txt" "$ifpid"
      sleep "$post" # trailing acknowledgements; the agents publish their counters every 2 s
      nft_snap "$d/nft-done.txt"
      status_snap "$d/status-done.json"
      ha_snap "$d/ha-done.txt"
      [ -n "$ifd" ] && iftop_final "$d/iftop.txt" "$ifd" "$t_done"
      rm -f "$d/phase"
    fi
  fi
  local rc=0
  wait "$mpid" || rc=$?
  if [ -n "$ipid" ]; then
    exec {ifd}>&-
    for ((i = 0; i < 100; i++)); do kill -0 "$ipid" 2>/dev/null || break; sleep 0.02; done
    kill -INT "$ipid" 2>/dev/null || true
    wait "$ipid" 2>/dev/null || true
  fi
  bg=()
  if [ "$rc" != 0 ] || [ ! -f "$d/nft-done.txt" ]; then
    cat "$d/mqbench.err" >&2
    die "mqbench failed ($wl, $setup, run $run): exit $rc"
  fi
  sleep "$teardown" # the subscribers' disconnects reach the agents, whose interest shrinks
  nft_snap "$d/nft-after.txt"
  python3 - "$d" "$hz" >>"$work/results.jsonl" <<'PY'
import json, sys, re
d, hz = sys.argv[1], int(sys.argv[2])
meta = json.load(open(f"{d}/meta.json"))
r = json.load(open(f"{d}/mqbench.json"))
nb = meta["brokers"]
names = [f"b{i}" for i in range(1, nb + 1)]
ip = {f"b{i}": f"198.18.0.{20 + i}" for i in range(1, nb + 1)}
addr = {f"198.18.0.{20 + i}:1883": f"b{i}" for i in range(1, nb + 1)}

def matches(f, t):  # MQTT 3.1.1 topic filter matching (no '$' topics here)
    fl, tl = f.split("/"), t.split("/")
    for i, x in enumerate(fl):
        if x == "#":
            return True
        if i >= len(tl) or (x != "+" and x != tl[i]):
            return False
    return len(fl) == len(tl)

def nft(tag):
    c = {}
    for line in open(f"{d}/nft-{tag}.txt"):
        b, js = line.split(" ", 1)
        for o in json.loads(js)["nftables"]:
            if "counter" in o:
                c[(b, o["counter"]["name"])] = (o["counter"]["bytes"], o["counter"]["packets"])
    return c

def cpu(tag):
    try:
        return {l.split()[0]: int(l.split()[1]) for l in open(f"{d}/cpu-{tag}.txt") if l.strip()}
    except FileNotFoundError:
        return {}

def hastat(tag):
    s = {}
    for l in open(f"{d}/ha-{tag}.txt"):
        lb, srv, n = l.split()
        s[srv] = s.get(srv, 0) + int(n)
    return s

def status(tag):
    out = {}
    for node in json.load(open(f"{d}/status-{tag}.json")) or []:
        a = node.get("agent") or {}
        if not a:
            continue
        peers = a.get("peers") or []
        out[node["node"]] = {"relayed": sum(p["relayed"] for p in peers), "batches": sum(p["batches"] for p in peers),
                             "relayed_bytes": sum(p["relayed_bytes"] for p in peers),
                             "republished": a.get("republished", 0), "control_bytes": a.get("control_bytes", 0)}
    return out

def size_bytes(s):
    m = re.fullmatch(r"([0-9.]+)([KMG]?)B", s)
    return float(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2)]

def iftop():
    try:
        text = open(f"{d}/iftop.txt").read()
    except FileNotFoundError:
        return None
    blocks = text.split("# Host name")
    if len(blocks) < 2:
        return None
    last = blocks[-1].splitlines()
    by_peer, pending = {}, None
    total = None
    for l in last:
        f = l.split()
        if "=>" in f:
            pending = size_bytes(f[-1])
        elif "<=" in f and pending is not None:
            peer = f[0].rsplit(":", 1)[0]
            name = next((n for n, a in ip.items() if a == peer), peer)
            e = by_peer.setdefault(name, {"sent": 0.0, "received": 0.0})
            e["sent"] += pending
            e["received"] += size_bytes(f[-1])
            pending = None
        elif l.startswith("Cumulative"):
            x = l.split(":")[1].split()
            total = {"sent": size_bytes(x[0]), "received": size_bytes(x[1]), "total": size_bytes(x[2])}
    return {"total_bytes": total["total"] if total else None, "sent_bytes": total["sent"] if total else None,
            "received_bytes": total["received"] if total else None,
            "by_peer": {k: v["sent"] + v["received"] for k, v in by_peer.items()}}

# Publishes per broker: directly connected publishers, or HAProxy's new sessions per server
# (only the publishers connect through it during a run).
pub_brokers = meta["pub_brokers"]
acked = r["acked"]
if all(p in addr for p in pub_brokers):
    per = {}
    for i in range(meta["publishers"]):
        b = addr[pub_brokers[i % len(pub_brokers)]]
        per[b] = per.get(b, 0) + 1
else:
    h0, h1 = hastat("start"), hastat("done")
    per = {b: h1.get(b, 0) - h0.get(b, 0) for b in names}
tot = sum(per.values()) or 1
pubs_on = {b: acked * per.get(b, 0) / tot for b in names}

# Where the matching subscribers are.
subs_on = {}
for i in range(meta["subscribers"]):
    f = meta["sub_topics"][i % len(meta["sub_topics"])] if meta["sub_topics"] else (meta["pattern"] % i if "%" in meta["pattern"] else meta["pattern"])
    if matches(f, meta["topic"]):
        b = addr[meta["sub_brokers"][i % len(meta["sub_brokers"])]]
        subs_on[b] = subs_on.get(b, 0) + 1

# The floor: one MQTT PUBLISH per message and broker that has a matching subscriber and is not
# the broker the message was published on. PUBLISH = fixed header (1 byte + remaining length as
# a varint) + topic length (2) + topic + packet id (2, QoS > 0) + payload.
def wire(topic, qos, size):
    rem = 2 + len(topic.encode()) + (2 if qos > 0 else 0) + size
    v = 1 if rem < 128 else 2 if rem < 16384 else 3 if rem < 2097152 else 4
    return 1 + v + rem
w = wire(meta["topic"], meta["qos"], meta["size"])

n0, nr, nd, na = nft("start"), nft("ready"), nft("done"), nft("after")
def pair_counts(a, b, x, y):  # bytes, packets from a to b in [x, y), counted in a's namespace
    k = (a, f"out_{b}")
    return y[k][0] - x[k][0], y[k][1] - x[k][1]
pairs = {}
for i in range(nb):
    for j in range(i + 1, nb):
        a, b = names[i], names[j]
        e = {"floor": w * (pubs_on[a] * (b in subs_on) + pubs_on[b] * (a in subs_on))}
        for phase, x, y in (("setup", n0, nr), ("publish", nr, nd), ("run", n0, nd), ("teardown", nd, na), ("total", n0, na)):
            ab, abp = pair_counts(a, b, x, y)
            ba, bap = pair_counts(b, a, x, y)
            e[phase] = {"bytes": ab + ba, "packets": abp + bap, f"{a}->{b}": ab, f"{b}->{a}": ba}
        # TCP payload: every packet between brokers carries 20 B of IPv4 and 32 B of TCP header
        # (Linux sends the timestamp option on every segment): payload = bytes - 52 x packets.
        e["publish"]["payload"] = e["publish"]["bytes"] - 52 * e["publish"]["packets"]
        pairs[f"{a}-{b}"] = e
sumk = lambda phase, k: sum(p[phase][k] for p in pairs.values())
floor = sum(p["floor"] for p in pairs.values())

c0, cr, cd = cpu("start"), cpu("ready"), cpu("done")
secs = lambda x, y: {k: (y[k] - x[k]) / hz for k in y if k in x}
cpu_pub, cpu_setup = secs(cr, cd), secs(c0, cr)
msgs = max(acked, 1)
us = lambda pred: sum(v for k, v in cpu_pub.items() if pred(k)) / msgs * 1e6
s0, s1 = status("start"), status("done")
agents = {k: {m: s1[k][m] - s0[k][m] for m in s1[k]} for k in s1 if k in s0}

row = {k: meta[k] for k in ("setup", "workload", "run", "brokers", "qos", "publishers", "count", "size", "subscribers")}
row.update({
    "published": r["published"], "acked": acked, "publish_rate": r["publish_rate"], "delivery_rate": r["delivery_rate"],
    "p50_ms": r["latency_p50_ms"], "p99_ms": r["latency_p99_ms"], "max_ms": r["latency_max_ms"],
    "expected": r["expected"], "received": r["received"], "lost": r["lost"], "duplicates": r["duplicates"],
    "unexpected": r["unexpected"], "complete": r["complete"], "e2e_s": r["e2e_duration_s"],
    "publishers_on": per, "published_on": pubs_on, "matching_subscribers_on": subs_on,
    "wire_bytes_per_publish": w, "floor_bytes": floor,
    "bytes_total": sumk("total", "bytes"), "bytes_setup": sumk("setup", "bytes"),
    "bytes_publish": sumk("publish", "bytes"), "packets_publish": sumk("publish", "packets"),
    "payload_publish": sum(p["publish"]["payload"] for p in pairs.values()),
    "bytes_teardown": sumk("teardown", "bytes"), "bytes_run": sumk("run", "bytes"),
    "pairs": pairs, "iftop": iftop(),
    "cpu_us_per_msg": us(lambda k: k.startswith(("broker", "agent"))),
    "cpu_us_per_msg_brokers": us(lambda k: k.startswith("broker")),
    "cpu_us_per_msg_agents": us(lambda k: k.startswith("agent")),
    "cpu_us_per_msg_haproxy": us(lambda k: k.startswith("haproxy")),
    "cpu_s_publish": cpu_pub, "cpu_s_setup": cpu_setup, "agents": agents,
})
row["ratio_floor_bytes"] = row["bytes_publish"] / floor if floor else None
row["ratio_floor_payload"] = row["payload_publish"] / floor if floor else None
print(json.dumps(row))
PY
  python3 - "$work/results.jsonl" <<'PY' >&2
import json, sys
r = json.loads(open(sys.argv[1]).readlines()[-1])
print(f"  {r['workload']:15} {r['setup']:7} run {r['run']}: {r['publish_rate']:8.0f} pub/s {r['delivery_rate']:8.0f} deliveries/s "
      f"p50 {r['p50_ms']:7.1f} ms lost {r['lost']} dup {r['duplicates']}  between brokers {r['bytes_run'] / 1e6:6.3f} MB "
      f"(publish phase {r['bytes_publish'] / 1e6:.3f}, floor {r['floor_bytes'] / 1e6:.3f})  CPU {r['cpu_us_per_msg']:.1f} us/msg")
PY
}

# ---- the run ---------------------------------------------------------------------------------

: >"$work/results.jsonl"
workloads2=(reference-qos1 reference-qos0 local)
say "runs $runs: $pubs publishers x $count x $size B, $nsubs subscribers$([ "$wildcard" = 1 ] && echo "; wildcard: $pubs x $wcount on 3 brokers")"

# Every run brings each lab up afresh, so that whatever else loads the machine falls on every
# setup alike (the medians compare setups measured side by side, not one after the other).
for r in $(seq "$runs"); do
  if [ "$sessions_only" = 1 ]; then
    lab_up 2 0
    measure ha sessions "$r"
    lab_down
    MHA_LAB_SESSIONS=off lab_up 2 0
    measure ha-nosess sessions "$r"
    lab_down
    continue
  fi
  lab_up 2 0
  for w in "${workloads2[@]}"; do measure ha "$w" "$r"; done
  [ "$sessions" = 1 ] && measure ha sessions "$r"
  stop_agents
  for w in reference-qos1 reference-qos0; do measure single "$w" "$r"; done
  lab_down
  lab_up 2 1
  for w in "${workloads2[@]}"; do measure native "$w" "$r"; done
  lab_down
  if [ "$unpaced" = 1 ]; then
    MHA_LAB_READ_PAUSE=-1ms lab_up 2 0
    for w in "${workloads2[@]}"; do measure ha-unpaced "$w" "$r"; done
    lab_down
  fi
  if [ "$sessions" = 1 ]; then
    # Without replicas: a lab of its own, so that no agent restarts (a restarted agent asks for
    # everything until it accounts for its broker's clients, which this setup would pay for).
    MHA_LAB_SESSIONS=off lab_up 2 0
    measure ha-nosess sessions "$r"
    lab_down
  fi
  if [ "$wildcard" = 1 ]; then
    lab_up 3 0
    measure ha wildcard "$r"
    stop_agents
    measure single wildcard "$r"
    lab_down
    lab_up 3 1
    measure native wildcard "$r"
    lab_down
    if [ "$unpaced" = 1 ]; then
      MHA_LAB_READ_PAUSE=-1ms lab_up 3 0
      measure ha-unpaced wildcard "$r"
      lab_down
    fi
  fi
done

# The code measured: the commit, and a digest of uncommitted changes to what was built (taken
# when the binaries were built, at the start).
commit=$code_commit
python3 - "$work/results.jsonl" "${json:-}" "$runs" "$((SECONDS - t_start))" "$commit" "$smoke" <<'PY'
import json, statistics, sys, platform, subprocess
rows = [json.loads(l) for l in open(sys.argv[1])]
out, runs, wall, commit, smoke = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1"

def median(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    if isinstance(xs[0], bool):
        return all(xs)
    if isinstance(xs[0], (int, float)):
        return statistics.median(xs)
    if isinstance(xs[0], dict):
        keys = sorted({k for x in xs for k in x})
        return {k: median([x.get(k) for x in xs]) for k in keys}
    return xs[0]

med = {}
for r in rows:
    med.setdefault(r["workload"], {}).setdefault(r["setup"], []).append(r)
med = {w: {s: median(rs) for s, rs in v.items()} for w, v in med.items()}
order = [s for s in ("single", "native", "ha", "ha-unpaced", "ha-nosess")]

def g(w, s, k):
    return med.get(w, {}).get(s, {}).get(k)

def mb(x):
    return "-" if x is None else f"{x / 1e6:.3f}"

def ratio(a, b):
    return None if a is None or not b else a / b

p0 = rows[0]
print(f"\nreference experiment in the lab, medians of {runs} run(s){' (SMOKE: tiny counts)' if smoke else ''}; "
      f"{p0['publishers']} publishers x {p0['count']} x {p0['size']} B to test_1/1")
for w in ("reference-qos1", "reference-qos0", "local", "wildcard", "sessions"):
    if w not in med:
        continue
    any_ = next(iter(med[w].values()))
    print(f"\n{w}: QoS {any_['qos']}, {any_['subscribers']} subscribers, {any_['publishers']} x {any_['count']} publishes, {any_['brokers']} brokers max")
    print(f"{'setup':10} {'pub/s':>8} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lost':>5} {'dup':>4} "
          f"{'MB run':>9} {'MB publ.':>9} {'MB floor':>9} {'x floor':>7} {'payl. x':>7} {'iftop MB':>8} {'CPU us/msg':>10} {'(agents)':>8}")
    for s in order:
        m = med[w].get(s)
        if not m:
            continue
        rf = m.get("ratio_floor_bytes")
        rp = m.get("ratio_floor_payload")
        it = (m.get("iftop") or {}).get("total_bytes")
        print(f"{s:10} {m['publish_rate']:8.0f} {m['delivery_rate']:8.0f} {m['p50_ms']:7.1f} {m['p99_ms']:7.1f} {m['max_ms']:7.1f} "
              f"{m['lost']:5.0f} {m['duplicates']:4.0f} {mb(m['bytes_run']):>9} {mb(m['bytes_publish']):>9} {mb(m['floor_bytes']):>9} "
              f"{'-' if rf is None else f'{rf:.2f}':>7} {'-' if rp is None else f'{rp:.2f}':>7} {mb(it):>8} "
              f"{m['cpu_us_per_msg']:10.1f} {m['cpu_us_per_msg_agents']:8.1f}")
    if w == "wildcard":
        for s in ("native", "ha"):
            m = med[w].get(s)
            if m:
                print(f"  {s} MB per broker pair (subscribe + publish phases): " +
                      ", ".join(f"{p} {mb(v['run']['bytes'])} (floor {mb(v['floor'])})" for p, v in sorted(m["pairs"].items())))

targets = {}
for w in ("reference-qos0", "reference-qos1"):
    targets[w] = {
        "ha_over_native_bytes_run": ratio(g(w, "ha", "bytes_run"), g(w, "native", "bytes_run")),
        "ha_over_native_bytes_total": ratio(g(w, "ha", "bytes_total"), g(w, "native", "bytes_total")),
        "ha_over_native_bytes_publish": ratio(g(w, "ha", "bytes_publish"), g(w, "native", "bytes_publish")),
        # The same comparison at the same split of publishers between b1 and b2 (HAProxy hashes
        # mosquitto-ha's random client ids, the native lab's round robin splits them evenly):
        # bytes per byte of floor, ha over native.
        "ha_over_native_bytes_same_split": ratio(ratio(g(w, "ha", "bytes_run"), g(w, "ha", "floor_bytes")),
                                                 ratio(g(w, "native", "bytes_run"), g(w, "native", "floor_bytes"))),
        "ha_over_floor_bytes": g(w, "ha", "ratio_floor_bytes"),
        "ha_over_floor_payload": g(w, "ha", "ratio_floor_payload"),
        "native_over_floor_bytes": g(w, "native", "ratio_floor_bytes"),
        "ha_over_native_delivery_rate": ratio(g(w, "ha", "delivery_rate"), g(w, "native", "delivery_rate")),
        "ha_over_native_publish_rate": ratio(g(w, "ha", "publish_rate"), g(w, "native", "publish_rate")),
        "ha_over_single_delivery_rate": ratio(g(w, "ha", "delivery_rate"), g(w, "single", "delivery_rate")),
    }
if "local" in med:
    targets["local"] = {"ha_bytes_publish": g("local", "ha", "bytes_publish"),
                        "ha_bytes_publish_per_msg": ratio(g("local", "ha", "bytes_publish"), g("local", "ha", "acked")),
                        "native_bytes_publish": g("local", "native", "bytes_publish"),
                        "ha_bytes_setup": g("local", "ha", "bytes_setup"), "ha_bytes_teardown": g("local", "ha", "bytes_teardown")}
if "wildcard" in med:
    targets["wildcard"] = {"ha_over_native_bytes_run": ratio(g("wildcard", "ha", "bytes_run"), g("wildcard", "native", "bytes_run")),
                           "ha_over_floor_bytes": g("wildcard", "ha", "ratio_floor_bytes"),
                           "native_over_floor_bytes": g("wildcard", "native", "ratio_floor_bytes")}
if "sessions" in med:
    on, off = med["sessions"].get("ha") or {}, med["sessions"].get("ha-nosess") or {}
    targets["sessions"] = {"replicas_over_none_bytes_run": ratio(on.get("bytes_run"), off.get("bytes_run")),
                           "replicas_bytes_run": on.get("bytes_run"), "none_bytes_run": off.get("bytes_run"),
                           "replicas_over_none_cpu_us_per_msg": ratio(on.get("cpu_us_per_msg"), off.get("cpu_us_per_msg")),
                           "replicas_cpu_us_per_msg": on.get("cpu_us_per_msg"), "none_cpu_us_per_msg": off.get("cpu_us_per_msg"),
                           "replicas_cpu_us_per_msg_agents": on.get("cpu_us_per_msg_agents"),
                           "none_cpu_us_per_msg_agents": off.get("cpu_us_per_msg_agents"),
                           "replicas_over_none_delivery_rate": ratio(on.get("delivery_rate"), off.get("delivery_rate"))}
f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
t0, t1 = targets.get("reference-qos0", {}), targets.get("reference-qos1", {})
print("\ntargets (reported, not asserted):")
print(f"  reference QoS 0, bytes between brokers ha/native: {f(t0.get('ha_over_native_bytes_run'))} subscribe + publish phases, "
      f"{f(t0.get('ha_over_native_bytes_publish'))} publish phase, {f(t0.get('ha_over_native_bytes_same_split'))} at the same "
      f"publisher split (target <= 0.50); QoS 1: {f(t1.get('ha_over_native_bytes_run'))}, same split {f(t1.get('ha_over_native_bytes_same_split'))}")
print(f"  reference QoS 0, ha bytes / floor: {f(t0.get('ha_over_floor_bytes'))} on the wire (IP), {f(t0.get('ha_over_floor_payload'))} TCP payload "
      f"(target <= 1.10); native: {f(t0.get('native_over_floor_bytes'))}")
if "local" in targets:
    t = targets["local"]
    print(f"  local (no remote subscriber): ha {f(t['ha_bytes_publish'], 0)} B between brokers while publishing "
          f"({f(t['ha_bytes_publish_per_msg'], 3)} B per publish; native {mb(t['native_bytes_publish'])} MB); "
          f"interest: {f(t['ha_bytes_setup'], 0)} B subscribing, {f(t['ha_bytes_teardown'], 0)} B disconnecting")
print(f"  throughput QoS 1, deliveries/s ha/native: {f(t1.get('ha_over_native_delivery_rate'))}, publishes/s {f(t1.get('ha_over_native_publish_rate'))}; "
      f"ha/single {f(t1.get('ha_over_single_delivery_rate'))}")
if any("ha-unpaced" in med[w] for w in med):
    targets["paced"] = {}
    print("  read pacing (issue 15), ha-unpaced -> ha: deliveries/s over native; total CPU per message over native; agents us/msg")
    for w in ("reference-qos1", "reference-qos0", "local", "wildcard"):
        if "ha-unpaced" not in med.get(w, {}):
            continue
        t = {k: ratio(g(w, s, "delivery_rate"), g(w, "native", "delivery_rate")) for k, s in (("unpaced_over_native_delivery_rate", "ha-unpaced"), ("ha_over_native_delivery_rate", "ha"))}
        t.update({k: ratio(g(w, s, "cpu_us_per_msg"), g(w, "native", "cpu_us_per_msg")) for k, s in (("unpaced_over_native_cpu", "ha-unpaced"), ("ha_over_native_cpu", "ha"))})
        t.update({"unpaced_agents_us_per_msg": g(w, "ha-unpaced", "cpu_us_per_msg_agents"), "ha_agents_us_per_msg": g(w, "ha", "cpu_us_per_msg_agents")})
        targets["paced"][w] = t
        print(f"    {w:15} {f(t['unpaced_over_native_delivery_rate'])} -> {f(t['ha_over_native_delivery_rate'])}; "
              f"{f(t['unpaced_over_native_cpu'])} -> {f(t['ha_over_native_cpu'])}; "
              f"{f(t['unpaced_agents_us_per_msg'], 1)} -> {f(t['ha_agents_us_per_msg'], 1)}")
if "sessions" in targets:
    t = targets["sessions"]
    print(f"  session replicas (persistent subscribers, ha with replicas / without): bytes between brokers {mb(t['replicas_bytes_run'])} / "
          f"{mb(t['none_bytes_run'])} MB ({f(t['replicas_over_none_bytes_run'])}x), CPU {f(t['replicas_cpu_us_per_msg'], 1)} / "
          f"{f(t['none_cpu_us_per_msg'], 1)} us/msg ({f(t['replicas_over_none_cpu_us_per_msg'])}x; agents {f(t['replicas_cpu_us_per_msg_agents'], 1)} / "
          f"{f(t['none_cpu_us_per_msg_agents'], 1)}), deliveries/s {f(t['replicas_over_none_delivery_rate'])}x")
print(f"wall time {wall} s, code {commit}")
if out:
    def ver(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return (p.stdout.strip() or p.stderr.strip()).splitlines()[0]
        except Exception:
            return None
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
    env = {"cpus": len(__import__("os").sched_getaffinity(0)), "cpu_model": cpu, "kernel": platform.release(),
           "go": ver(["go", "version"]), "mosquitto": ver(["mosquitto", "-h"]), "haproxy": ver(["haproxy", "-v"]),
           "keepalived": ver(["keepalived", "--version"]) or None, "iftop": "1.0pre4", "nft": ver(["nft", "--version"]),
           "code": commit, "wall_s": wall}
    json.dump({"params": {"runs": runs, "smoke": smoke, "publishers": p0["publishers"], "count": p0["count"], "size": p0["size"]},
               "environment": env, "median": med, "targets": targets, "runs": rows}, open(out, "w"), indent=1)
    print(f"wrote {out}")
PY
