#!/usr/bin/env bash
# The mosquitto-ha lab: the reference study's hosts as network namespaces on one machine.
#
#   scripts/lab.sh up [--brokers N] [--native]  build it; wait until the VIP answers MQTT
#   scripts/lab.sh down                         remove everything up made (idempotent, also after a failed up)
#   scripts/lab.sh status                       processes, VIP holder, `mosquitto-ha status`
#   scripts/lab.sh wait [SECONDS]               wait until every process runs, every broker is UP
#                                               behind every HAProxy and the VIP answers MQTT
#   scripts/lab.sh fault VERB [HOST]            kill-broker|start-broker|kill-agent|start-agent bI,
#                                               kill-haproxy|start-haproxy|kill-keepalived|start-keepalived lbI,
#                                               cut|heal HOST (its link down/up), vip (print the holder)
#   scripts/lab.sh repair                       heal every link, start every stopped process
#   scripts/lab.sh check [labcheck flags]       run scripts/cmd/labcheck in mha-client through the VIP
#
# Hosts (namespaces) mha-lb1, mha-lb2, mha-b1..mha-bN (default N=3), mha-client, each with
# eth0 on the bridge mha-br0 (host side veth mha-v-<host>) and only 198.18.0.0/15 addresses:
# lb1 .11, lb2 .12, bI .(20+I), client .50, VIP 198.18.0.100. Brokers run Mosquitto + the agent,
# load balancers HAProxy + keepalived, all configured by `mosquitto-ha` from one cluster file.
# --native is the study's own design instead: Mosquitto bridges (a star on b1, the only loop-free
# shape), HAProxy round robin with a TCP check, keepalived MASTER/BACKUP without health tracking.
#
# Environment: MHA_LAB_DIR (state, configs, logs; default /tmp/mha-lab), MHA_BIN (a built
# mosquitto-ha), MHA_LABCHECK (a built labcheck), MHA_KILL_SIGNAL (kill-* verbs, default KILL),
# MHA_AGENT_LOG_LEVEL (the agents' --log-level, default info), MHA_AGENT_CPUPROFILE (a directory:
# every agent writes a CPU profile there until it stops), MHA_LAB_SESSIONS=off (the agents run
# without session replicas: agent.sessions.enabled false), MHA_LAB_SYS_INTERVAL (the brokers'
# sys_interval, as an operator would set it; default: Mosquitto's, 10 s), MHA_LAB_READ_PAUSE (the
# agents' agent.read_pause, e.g. -1ms to read every packet at once; default: the agent's, 1ms).
# Needs root. Processes are stopped by pid file, namespaces and links by name.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB=${MHA_LAB_DIR:-/tmp/mha-lab}
BR=mha-br0
NET=198.18.0
PLEN=15
VIP=$NET.100
PORT=1883
SIG=${MHA_KILL_SIGNAL:-KILL}

die() { echo "lab.sh: $*" >&2; exit 1; }
say() { echo "lab.sh: $*"; }
need_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root (it creates network namespaces, a bridge and a floating IP): run it as root, e.g. sudo $0 $*"
}

# ---- hosts -------------------------------------------------------------------------------

# host_ip HOST prints the host's address.
host_ip() {
  case "$1" in
    lb1) echo "$NET.11" ;;
    lb2) echo "$NET.12" ;;
    client) echo "$NET.50" ;;
    b[0-9]*) echo "$NET.$((20 + ${1#b}))" ;;
    *) die "unknown host $1 (want lb1, lb2, bI or client)" ;;
  esac
}

load_env() {
  [ -f "$LAB/lab.env" ] || die "no lab in $LAB (run: $0 up)"
  # shellcheck source=/dev/null
  . "$LAB/lab.env"
}

brokers() { local i; for ((i = 1; i <= BROKERS; i++)); do echo "b$i"; done; }
hosts() { echo lb1; echo lb2; brokers; echo client; }

check_host() {
  local h
  for h in $(hosts); do [ "$h" = "$1" ] && return 0; done
  die "unknown host '$1' (have: $(hosts | tr '\n' ' '))"
}

# on HOST CMD... runs CMD in the host's namespace.
on() { local h=$1; shift; ip netns exec "mha-$h" "$@"; }

# ---- processes ---------------------------------------------------------------------------

pidfile() { echo "$LAB/pids/$1.$2.pid"; }

# ours PID: the process runs one of the lab's files (its command line names $LAB).
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$LAB/"; }

# signal_ours PID SIGNAL: signal PID if it is one of the lab's processes.
signal_ours() {
  if [ -n "$1" ] && ours "$1"; then kill -s "$2" "$1" 2>/dev/null || true; fi
}

# running HOST NAME: the pid file's process is alive and ours.
running() {
  local f pid
  f=$(pidfile "$1" "$2")
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && ours "$pid"
}

# spawn HOST NAME CMD...: start CMD in the host's namespace, in its own session, detached from
# our stdio (a caller reading our output must not wait for the daemons), pid in a pid file.
spawn() {
  local h=$1 name=$2; shift 2
  local log="$LAB/logs/$h.$name.log"
  running "$h" "$name" && die "$name on $h is already running (pid $(cat "$(pidfile "$h" "$name")"))"
  echo "=== $(date '+%F %T.%N') start: $*" >>"$log"
  setsid ip netns exec "mha-$h" "$@" >>"$log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$h" "$name")"
}

# stop HOST NAME SIGNAL: signal the process of the pid file (if ours) and wait until it is gone.
stop() {
  local h=$1 name=$2 sig=$3 f pid extra=()
  f=$(pidfile "$h" "$name")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ "$name" = keepalived ] && [ -f "$LAB/$h/keepalived-vrrp.pid" ]; then
    extra=("$(cat "$LAB/$h/keepalived-vrrp.pid")")
  fi
  local p
  for p in "$pid" "${extra[@]}"; do
    signal_ours "$p" "$sig"
  done
  local i
  for ((i = 0; i < 100; i++)); do
    ours "$pid" || break
    sleep 0.05
  done
  if ours "$pid"; then kill -s KILL "$pid" 2>/dev/null || true; sleep 0.1; fi
  for p in "${extra[@]}"; do signal_ours "$p" KILL; done
  rm -f "$f"
  echo "=== $(date '+%F %T.%N') stopped with SIG$sig" >>"$LAB/logs/$h.$name.log"
}

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.1 s.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "lab.sh: timed out after ${secs}s waiting for $what" >&2
      return 1
    fi
    sleep 0.1
  done
}

tcp_open() { on "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; }

# log_tails: the end of every log, for a failed up or wait.
log_tails() {
  local f
  for f in "$LAB"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "----- ${f#"$LAB"/} (last 15 lines)" >&2
    tail -n 15 "$f" >&2
  done
}

fail() { echo "lab.sh: $*" >&2; log_tails; echo "lab.sh: the lab is left as it is for inspection; remove it with: $0 down" >&2; exit 1; }

# ---- configuration -------------------------------------------------------------------------

# write_cluster FILE LB: the cluster file; LB's copy names its own health-check id first (the
# check's client id is ignore_clients[0]) and its own stats socket, as both HAProxy hosts share
# one file system here.
write_cluster() {
  local file=$1 lb=$2 other b
  other=lb2; [ "$lb" = lb2 ] && other=lb1
  {
    echo "# mosquitto-ha lab cluster (scripts/lab.sh); hosts are network namespaces."
    echo "cluster: lab"
    echo "nodes:"
    for b in $(brokers); do echo "  - {name: $b, address: $(host_ip "$b"):$PORT}"; done
    echo "agent:"
    echo "  state_dir: $LAB/state"
    echo "  keepalive: 2s"
    echo "  snapshot_interval: 200ms"
    echo "  cluster_secret_file: $LAB/cluster.secret"
    [ "${MHA_LAB_SESSIONS:-on}" = off ] && echo "  sessions: {enabled: false}"
    [ -n "${MHA_LAB_READ_PAUSE:-}" ] && echo "  read_pause: $MHA_LAB_READ_PAUSE"
    echo "  ignore_clients: [haproxy-hc-$lb, haproxy-hc-$other, labcheck-obs]"
    echo "load_balancer:"
    echo "  vip: $VIP/$PLEN"
    echo "  interface: eth0"
    echo "  listen: \":$PORT\""
    echo "  check_interval: 500ms"
    echo "  advert_interval: 200ms"
    echo "  stats_socket: $LAB/$lb/admin.sock"
    echo "  hosts:"
    echo "    - {name: lb1, address: $(host_ip lb1), priority: 150}"
    echo "    - {name: lb2, address: $(host_ip lb2), priority: 100}"
  } >"$file"
}

write_configs() {
  local b lb
  mkdir -p "$LAB/state"
  # Relays and interest messages signed, as in production (agent.cluster_secret_file).
  (umask 077 && head -c 32 /dev/urandom | base64 >"$LAB/cluster.secret")
  write_cluster "$LAB/cluster.yaml" lb1
  "$BIN" check --config "$LAB/cluster.yaml" >/dev/null || die "mosquitto-ha check rejects $LAB/cluster.yaml"
  for b in $(brokers); do
    mkdir -p "$LAB/$b"
    {
      echo "# $b of the mosquitto-ha lab (scripts/lab.sh)"
      echo "user root"
      echo "allow_anonymous true"
      echo "persistence_location $LAB/$b/"
      echo "log_dest stderr"
      echo "listener $PORT $(host_ip "$b")"
      [ -n "${MHA_LAB_SYS_INTERVAL:-}" ] && echo "sys_interval $MHA_LAB_SYS_INTERVAL"
      if [ "$NATIVE" = 1 ]; then
        native_mosquitto "$b"
      else
        # Merged into the lines above, as into an install: without --broker-conf it would read
        # this host's /etc/mosquitto and leave out what that file sets (persistence, for one).
        "$BIN" mosquitto --config "$LAB/cluster.yaml" --node "$b" --broker-conf "$LAB/$b/mosquitto.conf" 2>"$LAB/$b/snippet.steps" | grep -v '^listener '
      fi
    } >"$LAB/$b/mosquitto.conf"
  done
  for lb in lb1 lb2; do
    mkdir -p "$LAB/$lb"
    if [ "$NATIVE" = 1 ]; then
      native_haproxy "$lb" >"$LAB/$lb/haproxy.cfg"
      native_keepalived "$lb" >"$LAB/$lb/keepalived.conf"
    else
      write_cluster "$LAB/$lb/cluster.yaml" "$lb"
      "$BIN" haproxy --config "$LAB/$lb/cluster.yaml" >"$LAB/$lb/haproxy.cfg" ||
        die "mosquitto-ha haproxy failed for $lb"
      "$BIN" keepalived --config "$LAB/$lb/cluster.yaml" --lb "$lb" >"$LAB/$lb/keepalived.conf" ||
        die "mosquitto-ha keepalived failed for $lb"
    fi
    haproxy -c -q -f "$LAB/$lb/haproxy.cfg" || die "haproxy -c rejects $LAB/$lb/haproxy.cfg"
  done
}

# The study's design (chapter 3): every broker bridges to b1 (two brokers: one bridge, as in the
# study; more: a star, since a mesh of native bridges loops, design.md).
native_mosquitto() {
  local b=$1
  echo "persistence true"
  echo "max_queued_messages 100000"
  echo "set_tcp_nodelay true"
  echo "log_dest topic"
  echo "log_type error"
  echo "log_type warning"
  echo "log_type notice"
  echo "log_type information"
  echo "log_type subscribe"
  if [ "$b" != b1 ]; then
    echo "connection $b-to-b1"
    echo "address $(host_ip b1):$PORT"
    echo "topic # both 1"
    echo "try_private true"
    echo "cleansession false"
    echo "remote_clientid bridge-$b"
    echo "restart_timeout 1 5"
    echo "keepalive_interval 5"
  fi
}

native_haproxy() {
  local b
  echo "# The study's haproxy.cfg (chapter 3): TCP, round robin, TCP connect check."
  echo "global"
  echo "    stats socket $LAB/$1/admin.sock mode 600 level admin"
  echo "defaults"
  echo "    mode tcp"
  echo "    timeout connect 5s"
  echo "    timeout client 95s"
  echo "    timeout server 95s"
  echo "frontend mqtt"
  echo "    bind *:$PORT"
  echo "    default_backend brokers"
  echo "backend brokers"
  echo "    balance roundrobin"
  for b in $(brokers); do echo "    server $b $(host_ip "$b"):$PORT check"; done
}

native_keepalived() {
  local state=MASTER prio=101
  [ "$1" = lb2 ] && { state=BACKUP; prio=100; }
  echo "# The study's keepalived.conf (chapter 3): no health tracking of HAProxy."
  echo "vrrp_instance VI_1 {"
  echo "    state $state"
  echo "    interface eth0"
  echo "    virtual_router_id 51"
  echo "    priority $prio"
  echo "    advert_int 1"
  echo "    virtual_ipaddress {"
  echo "        $VIP/$PLEN dev eth0"
  echo "    }"
  echo "}"
}

# ---- starting ------------------------------------------------------------------------------

start_broker() {
  local b=$1
  spawn "$b" mosquitto mosquitto -c "$LAB/$b/mosquitto.conf"
  wait_for 10 "mosquitto on $b to listen on $(host_ip "$b"):$PORT" tcp_open "$b" "$(host_ip "$b")" "$PORT" ||
    fail "mosquitto on $b did not start"
}

agent_logged() { tail -n "+$2" "$LAB/logs/$1.agent.log" | grep -q "$3"; }

# start_agent BROKER [wait|nowait]: a fresh agent (no state file yet) waits until it advertises
# exact interest; a restarted one until its local connection is up. A restarted agent relays
# everything until it has seen the clients it restored again, which may take long: by design.
start_agent() {
  local b=$1 from want="advertising exact interest"
  [ "$NATIVE" = 1 ] && return 0
  from=1
  [ -f "$LAB/logs/$b.agent.log" ] && from=$(($(wc -l <"$LAB/logs/$b.agent.log") + 1))
  [ "$from" -gt 1 ] && want="local broker connected"
  local extra=()
  # MHA_AGENT_LOG_LEVEL=debug: the agents log every session job and log event (chaos.sh keeps the logs).
  [ -n "${MHA_AGENT_LOG_LEVEL:-}" ] && extra+=(--log-level "$MHA_AGENT_LOG_LEVEL")
  # MHA_AGENT_CPUPROFILE=DIR: every agent writes a CPU profile there until it stops (SIGTERM).
  [ -n "${MHA_AGENT_CPUPROFILE:-}" ] && extra+=(--cpuprofile "$MHA_AGENT_CPUPROFILE/$b.$(date +%s%N).pprof")
  spawn "$b" agent "$BIN" agent --config "$LAB/cluster.yaml" --node "$b" "${extra[@]}"
  [ "${2:-wait}" = nowait ] && return 0
  wait_for 30 "the agent on $b to log \"$want\"" agent_logged "$b" "$from" "$want" ||
    fail "the agent on $b did not start"
}

start_haproxy() {
  local lb=$1
  spawn "$lb" haproxy haproxy -db -f "$LAB/$lb/haproxy.cfg"
  wait_for 10 "haproxy on $lb to listen" tcp_open "$lb" 127.0.0.1 "$PORT" || fail "haproxy on $lb did not start"
}

start_keepalived() {
  local lb=$1
  # -n: stay in the foreground (its pid is the pid file's); -P: VRRP only; its own pid files,
  # since both load balancers share /run here; -l -D -G: detailed log on stderr, no syslog.
  spawn "$lb" keepalived keepalived -n -l -D -G -P -f "$LAB/$lb/keepalived.conf" \
    -p "$LAB/$lb/keepalived.pid" -r "$LAB/$lb/keepalived-vrrp.pid" -c "$LAB/$lb/keepalived-checkers.pid"
  sleep 0.2
  running "$lb" keepalived || fail "keepalived on $lb exited at once"
}

has_vip() { ip -n "mha-$1" -4 -o addr show dev eth0 2>/dev/null | grep -q " $VIP/"; }

vip_holders() {
  local lb out=()
  for lb in lb1 lb2; do has_vip "$lb" && out+=("$lb"); done
  echo "${out[*]:-none}"
}

one_vip_holder() { local h; h=$(vip_holders); [ "$h" = lb1 ] || [ "$h" = lb2 ]; }

mqtt_via_vip() {
  on client timeout 3 mosquitto_pub -h "$VIP" -p "$PORT" -i lab-probe -q 1 -t lab/probe -m ok
}

all_up_behind() {
  local lb=$1 stat b
  stat=$(on "$lb" "$LABCHECK" hastat --socket "$LAB/$lb/admin.sock") || return 1
  for b in $(brokers); do
    grep -q " $b UP" <<<"$stat" || return 1
  done
}

# ---- verbs ---------------------------------------------------------------------------------

build() {
  if [ -n "${MHA_BIN:-}" ]; then
    BIN=$MHA_BIN
  else
    command -v go >/dev/null || die "Go is needed to build mosquitto-ha (or set MHA_BIN)"
    BIN=$LAB/bin/mosquitto-ha
    (cd "$ROOT" && go build -o "$BIN" ./cmd/mosquitto-ha) || die "go build ./cmd/mosquitto-ha failed"
  fi
  if [ -n "${MHA_LABCHECK:-}" ]; then
    LABCHECK=$MHA_LABCHECK
  else
    command -v go >/dev/null || die "Go is needed to build labcheck (or set MHA_LABCHECK)"
    LABCHECK=$LAB/bin/labcheck
    (cd "$ROOT" && go build -o "$LABCHECK" ./scripts/cmd/labcheck) || die "go build ./scripts/cmd/labcheck failed"
  fi
  [ -x "$BIN" ] || die "MHA_BIN=$BIN is not an executable"
  [ -x "$LABCHECK" ] || die "MHA_LABCHECK=$LABCHECK is not an executable"
}

check_tools() {
  local missing=() t
  for t in ip mosquitto mosquitto_pub haproxy keepalived setsid timeout; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] ||
    die "missing ${missing[*]}: apt-get install -y mosquitto mosquitto-clients haproxy keepalived iproute2 util-linux coreutils"
}

# add_host HOST: namespace, loopback, veth to the bridge, address. Recorded before it is made,
# so that down removes it even if this fails half way.
add_host() {
  local h=$1
  echo "netns mha-$h" >>"$LAB/created"
  ip netns add "mha-$h"
  ip -n "mha-$h" link set lo up
  echo "link mha-v-$h" >>"$LAB/created"
  ip link add "mha-v-$h" type veth peer name "mha-p-$h"
  ip link set "mha-p-$h" netns "mha-$h"
  ip -n "mha-$h" link set "mha-p-$h" name eth0
  ip -n "mha-$h" addr add "$(host_ip "$h")/$PLEN" dev eth0
  ip -n "mha-$h" link set eth0 up
  ip link set "mha-v-$h" master "$BR"
  ip link set "mha-v-$h" up
}

up() {
  BROKERS=3 NATIVE=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --brokers) BROKERS=${2:-}; shift 2 ;;
      --native) NATIVE=1; shift ;;
      *) die "up: unknown argument $1 (want --brokers N, --native)" ;;
    esac
  done
  if ! [[ "$BROKERS" =~ ^[2-9]$ ]]; then die "up: --brokers wants 2..9"; fi
  need_root up
  check_tools
  if [ -e "$LAB/lab.env" ] || ip netns list | grep -qE '^mha-(lb[12]|client|b[0-9]+)( |$)' ||
    ip link show "$BR" >/dev/null 2>&1; then
    die "a lab (or what is left of one) exists: $0 down first"
  fi
  mkdir -p "$LAB"/{pids,logs,bin}
  : >"$LAB/created"
  build
  {
    echo "BROKERS=$BROKERS"
    echo "NATIVE=$NATIVE"
    echo "BIN=$BIN"
    echo "LABCHECK=$LABCHECK"
  } >"$LAB/lab.env"

  say "network: bridge $BR, namespaces $(hosts | sed 's/^/mha-/' | tr '\n' ' ')"
  echo "link $BR" >>"$LAB/created"
  ip link add "$BR" type bridge
  ip link set "$BR" up
  local h
  for h in $(hosts); do add_host "$h"; done

  write_configs
  if [ "$NATIVE" = 1 ]; then
    say "design: the study's (native bridges to b1, HAProxy round robin, keepalived without tracking)"
  fi
  local b lb
  for b in $(brokers); do start_broker "$b"; done
  for b in $(brokers); do
    wait_for 5 "mha-client to reach $b across $BR" tcp_open client "$(host_ip "$b")" "$PORT" ||
      fail "no connectivity on $BR"
  done
  say "brokers listening: $(brokers | tr '\n' ' ')"
  for b in $(brokers); do start_agent "$b" nowait; done
  for lb in lb1 lb2; do start_haproxy "$lb"; done
  for lb in lb1 lb2; do start_keepalived "$lb"; done
  wait_ready 60 || fail "the lab did not become ready"
  say "up: VIP $VIP held by $(vip_holders); state, configs and logs in $LAB"
}

# cluster_settled: every broker and agent up, every peer link up, nothing buffered for a peer
# (the agents publish their status every 2 s: this lags by as much).
cluster_settled() {
  local out
  out=$(on client "$BIN" status --config "$LAB/cluster.yaml" --json) || return 1
  ! grep -qE '"up": false|"buffered": [1-9]' <<<"$out"
}

# wait_ready SECONDS: every process runs, agents settled, every broker UP behind every HAProxy,
# one VIP holder, MQTT through the VIP.
wait_ready() {
  local secs=${1:-60} b lb
  local deadline=$((SECONDS + secs))
  for b in $(brokers); do
    running "$b" mosquitto || { echo "lab.sh: mosquitto on $b is not running" >&2; return 1; }
    if [ "$NATIVE" = 0 ]; then
      running "$b" agent || { echo "lab.sh: the agent on $b is not running" >&2; return 1; }
      wait_for $((deadline - SECONDS)) "the agent on $b to settle" agent_logged "$b" 1 "advertising exact interest" || return 1
    fi
  done
  for lb in lb1 lb2; do
    running "$lb" haproxy || { echo "lab.sh: haproxy on $lb is not running" >&2; return 1; }
    running "$lb" keepalived || { echo "lab.sh: keepalived on $lb is not running" >&2; return 1; }
    wait_for $((deadline - SECONDS)) "every broker UP behind haproxy on $lb" all_up_behind "$lb" || return 1
  done
  wait_for $((deadline - SECONDS)) "exactly one VIP holder (now: $(vip_holders))" one_vip_holder || return 1
  wait_for $((deadline - SECONDS)) "an MQTT publish through the VIP from mha-client" mqtt_via_vip || return 1
  if [ "$NATIVE" = 0 ]; then
    wait_for $((deadline - SECONDS)) "\`mosquitto-ha status\` to see every broker, agent and peer link up, no relay buffered" \
      cluster_settled || return 1
  fi
}

down() {
  need_root down
  local f pid n h
  # 1. processes by pid file (only those running the lab's files)
  for f in "$LAB"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    signal_ours "$(cat "$f")" TERM
  done
  for f in "$LAB"/lb*/keepalived-vrrp.pid; do
    if [ -f "$f" ]; then signal_ours "$(cat "$f")" TERM; fi
  done
  # 2. anything still running inside the lab's namespaces (a labcheck, a mosquitto_pub)
  local nss
  nss=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mha-(lb[0-9]+|b[0-9]+|client)$' || true)
  for n in $nss; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
  done
  local i left
  for ((i = 0; i < 50; i++)); do
    left=0
    for n in $nss; do [ -n "$(ip netns pids "$n" 2>/dev/null)" ] && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for n in $nss; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for f in "$LAB"/pids/*.pid; do
    [ -f "$f" ] || continue
    signal_ours "$(cat "$f")" KILL
    rm -f "$f"
  done
  # 3. namespaces (their veth ends go with them), then the bridge and any veth left
  for n in $nss; do ip netns del "$n" 2>/dev/null || true; done
  for h in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^mha-v-' || true); do
    ip link del "$h" 2>/dev/null || true
  done
  ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR"
  # 4. the state directory (only if it is a lab's: it has lab.env or created)
  if [ -d "$LAB" ] && { [ -f "$LAB/lab.env" ] || [ -f "$LAB/created" ]; }; then rm -rf "$LAB"; fi
  say "down: no mha- namespace, link or process left"
}

status() {
  load_env
  local h name pid state
  printf '%-8s %-11s %-8s %s\n' HOST PROCESS PID STATE
  for h in $(hosts); do
    case "$h" in
      lb*) set -- haproxy keepalived ;;
      b*) if [ "$NATIVE" = 1 ]; then set -- mosquitto; else set -- mosquitto agent; fi ;;
      *) set -- ;;
    esac
    for name in "$@"; do
      pid=-
      state=stopped
      if running "$h" "$name"; then pid=$(cat "$(pidfile "$h" "$name")"); state=running; fi
      printf '%-8s %-11s %-8s %s\n' "$h" "$name" "$pid" "$state"
    done
    if ! ip link show "mha-v-$h" 2>/dev/null | grep -q 'state UP\|,UP'; then
      printf '%-8s %-11s %-8s %s\n' "$h" link - "down (cut)"
    fi
  done
  echo "VIP $VIP: $(vip_holders)"
  for h in lb1 lb2; do
    if running "$h" haproxy; then
      echo "haproxy on $h: $(on "$h" "$LABCHECK" hastat --socket "$LAB/$h/admin.sock" 2>/dev/null | awk '{printf "%s %s  ", $2, $3}')"
    fi
  done
  if [ "$NATIVE" = 0 ]; then
    echo
    on client "$BIN" status --config "$LAB/cluster.yaml" || true
  fi
}

fault() {
  need_root fault
  load_env
  local verb=${1:-} h=${2:-}
  case "$verb" in
    vip) vip_holders; return 0 ;;
    kill-broker | start-broker | kill-agent | start-agent)
      [[ "$h" =~ ^b[0-9]+$ ]] || die "fault $verb wants a broker host bI"
      check_host "$h" ;;
    kill-haproxy | start-haproxy | kill-keepalived | start-keepalived)
      [[ "$h" =~ ^lb[12]$ ]] || die "fault $verb wants lb1 or lb2"
      check_host "$h" ;;
    cut | heal) check_host "$h" ;;
    *) die "fault: unknown verb '$verb' (kill-broker, start-broker, kill-agent, start-agent, kill-haproxy, start-haproxy, kill-keepalived, start-keepalived, cut, heal, vip)" ;;
  esac
  case "$verb" in
    kill-broker) stop "$h" mosquitto "$SIG" ;;
    start-broker) start_broker "$h" ;;
    kill-agent) [ "$NATIVE" = 1 ] && die "the native lab has no agents"; stop "$h" agent "$SIG" ;;
    start-agent) [ "$NATIVE" = 1 ] && die "the native lab has no agents"; start_agent "$h" ;;
    kill-haproxy) stop "$h" haproxy "$SIG" ;;
    start-haproxy) start_haproxy "$h" ;;
    kill-keepalived) stop "$h" keepalived "$SIG" ;;
    start-keepalived) start_keepalived "$h" ;;
    cut) ip link set "mha-v-$h" down ;;
    heal) ip link set "mha-v-$h" up ;;
  esac
  say "$verb $h done at $(date '+%T.%N' | cut -c1-12)"
}

# repair: undo every fault (links up, stopped processes started), then wait until ready.
repair() {
  need_root repair
  load_env
  local h b lb
  for h in $(hosts); do ip link set "mha-v-$h" up; done
  for b in $(brokers); do running "$b" mosquitto || start_broker "$b"; done
  if [ "$NATIVE" = 0 ]; then
    for b in $(brokers); do running "$b" agent || start_agent "$b" nowait; done
  fi
  for lb in lb1 lb2; do
    running "$lb" haproxy || start_haproxy "$lb"
    running "$lb" keepalived || start_keepalived "$lb"
  done
  wait_ready 60 || fail "the lab is not ready after repair"
  say "repaired: VIP on $(vip_holders)"
}

main() {
  local verb=${1:-}
  [ $# -gt 0 ] && shift
  case "$verb" in
    up) up "$@" ;;
    down) down ;;
    status) need_root status; status ;;
    wait) need_root wait; load_env; wait_ready "${1:-60}" || fail "the lab is not ready" ;;
    fault) fault "$@" ;;
    repair) repair ;;
    check)
      need_root check
      load_env
      on client "$LABCHECK" --config "$LAB/cluster.yaml" --vip "$VIP:$PORT" "$@" ;;
    -h | --help | help | "") awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) die "unknown verb '$verb' (up, down, status, wait, fault, repair, check; --help)" ;;
  esac
}

main "$@"
