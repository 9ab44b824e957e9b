#!/usr/bin/env bash
# Soak and chaos in the lab, bounded in time: random faults (agents killed with SIGKILL, brokers
# restarted, HAProxy killed, broker and load balancer links cut) while a QoS 1 publisher and
# subscriber pair runs through the VIP, counting every message by sequence number. At the end
# every acknowledged message must have arrived (brokers are restarted with SIGTERM, so no broker
# dies with a queue: there are no dead letters to excuse), and the agents' memory must be flat.
# A message routed only to a persistent session the subscriber left when its broker went away
# counts as arrived when labcheck's return visit collects it there ("stranded": see
# docs/failover.md); the summary reports how many.
#
# --subscribe-once: the subscriber subscribes on its first connection only and never again (as
# many IoT apps do; labcheck --subscribe once): it receives after a move only what the cluster's
# sessions give it (issue 13).
#
# Issue 13's targets (0 lost, 0 stranded, duplicates at most 1% of the messages sent, and no
# reception gap over 10 s: a subscribe-once subscriber left deaf on a broker without its session
# gets everything late when it happens to go home, which the first three figures do not show;
# the resubscribing subscriber's longest gap was 4.1-5.8 s in 240 s runs) are binding with
# MHA_SESSION_TARGETS=1. The final code met them in two 240 s runs in a row (docs/failover.md),
# but one move repeats up to a few dozen messages and a double fault hundreds, which a short run
# cannot average out: so by default a --subscribe-once run only measures (its losses do not fail
# it) and the resubscribing subscriber passes on 0 lost as before. Duplicates are reported with
# the publisher's own resends apart (labcheck's duplicates_resent); the target counts them all.
#
#   scripts/chaos.sh [--duration 60] [--brokers 3] [--seed N] [--rate 100] [--smoke] [--report FILE]
#                    [--subscribe-once]
#
# Needs root (the lab is network namespaces). Exit 0 when nothing acknowledged was lost.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=60 brokers=3 seed=$RANDOM rate=100 report="" subscribe=every
session_targets=${MHA_SESSION_TARGETS:-0} # 1: issue 13's targets fail the run (docs/failover.md)
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --brokers) brokers="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --report) report="$2"; shift 2 ;;
    --smoke) duration=20; shift ;;
    --subscribe-once) subscribe=once; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "chaos.sh: needs root (the lab's hosts are network namespaces)" >&2; exit 1; }
[ "$duration" -ge 15 ] || { echo "chaos.sh: --duration must be at least 15 (seconds)" >&2; exit 2; }

export MHA_LAB_DIR=${MHA_LAB_DIR:-/tmp/mha-chaos}
out=$(mktemp -d /tmp/mha-chaos-out.XXXXXX)
lab() { scripts/lab.sh "$@"; }
cleanup() {
  [ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null || true
  # The lab's logs (agents, brokers, HAProxy) outlive it, beside the checker's report.
  [ -d "$MHA_LAB_DIR/logs" ] && cp -r "$MHA_LAB_DIR/logs" "$out/logs" 2>/dev/null || true
  lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== chaos: $duration s, $brokers brokers, seed $seed, $rate msg/s, subscriber subscribes $subscribe, session targets $([ "$session_targets" = 1 ] && echo binding || echo not binding) (logs in $out)"
lab up --brokers "$brokers" >"$out/up.log" 2>&1 || { cat "$out/up.log"; exit 1; }

# The checker publishes for the whole run, then drains; faults stop 8 s before its end. Each
# fault's kind goes to the checker's stdin as a mark, so its report blames every duplicate on the
# last fault before it.
mkfifo "$out/marks"
lab check --duration "${duration}s" --rate "$rate" --drain 30s --gap 1s --subscribe "$subscribe" <"$out/marks" >"$out/check.json" 2>"$out/check.err" &
checker=$!
exec 3>"$out/marks"

# Agent memory every 2 s: node, pid (a restart changes it), resident kB.
(
  while kill -0 "$checker" 2>/dev/null; do
    for i in $(seq "$brokers"); do
      f="$MHA_LAB_DIR/pids/b$i.agent.pid"
      [ -f "$f" ] || continue
      pid=$(cat "$f")
      rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
      [ -n "$rss" ] && echo "$SECONDS b$i $pid $rss"
    done
    sleep 2
  done
) >"$out/rss.txt" &
sampler=$!

# Every random draw happens in this shell: bash reseeds RANDOM in subshells, so a draw inside
# $(...) would not follow --seed.
RANDOM=$seed
kinds=(agent-kill broker-restart broker-link-cut haproxy-kill lb-link-cut)
sleep 4 # the pair settles
end=$((SECONDS + duration - 12))
faults=0
while [ $SECONDS -lt "$end" ]; do
  b="b$((RANDOM % brokers + 1))" l="lb$((RANDOM % 2 + 1))" hold=$((RANDOM % 3 + 2)) pause=$((RANDOM % 2 + 1))
  kind=$((RANDOM % 5))
  # A subshell takes the SIGPIPE if the checker is gone; chaos.sh goes on and reports that.
  (echo "${kinds[$kind]} $b $l" >&3) 2>/dev/null || true
  case $kind in
    0) what="agent $b killed (SIGKILL), restarted after ${hold}s"
       MHA_KILL_SIGNAL=KILL lab fault kill-agent "$b"; sleep "$hold"; lab fault start-agent "$b" ;;
    1) what="broker $b restarted (SIGTERM), down ${hold}s"
       MHA_KILL_SIGNAL=TERM lab fault kill-broker "$b"; sleep "$hold"; lab fault start-broker "$b" ;;
    2) what="link of $b cut for ${hold}s"
       lab fault cut "$b"; sleep "$hold"; lab fault heal "$b" ;;
    3) what="HAProxy on $l killed, restarted after ${hold}s"
       MHA_KILL_SIGNAL=KILL lab fault kill-haproxy "$l"; sleep "$hold"; lab fault start-haproxy "$l" ;;
    4) what="link of $l cut for ${hold}s"
       lab fault cut "$l"; sleep "$hold"; lab fault heal "$l" ;;
  esac >>"$out/faults.out" 2>&1
  faults=$((faults + 1))
  echo "   t=${SECONDS}s fault $faults: $what"
  sleep "$pause"
done
lab repair >>"$out/faults.out" 2>&1 || true
echo "== faults done ($faults); waiting for the checker to drain"
exec 3>&-
wait "$checker" || true
kill "$sampler" 2>/dev/null || true

python3 - "$out/check.json" "$out/rss.txt" "$faults" "$duration" "$seed" "${report:-}" "$subscribe" "$session_targets" <<'PY'
import json, sys, statistics
check_path, rss_path, faults, duration, seed, report, subscribe, session_targets = sys.argv[1:9]
binding = session_targets == "1"
try:
    r = json.load(open(check_path))
except Exception as e:
    print(f"chaos: the checker produced no report ({e})"); sys.exit(1)
rows = [l.split() for l in open(rss_path) if l.strip()]
# Per agent incarnation (node, pid): first and last resident size.
inc = {}
for t, node, pid, kb in rows:
    inc.setdefault((node, pid), []).append((int(t), int(kb)))
lines = []
flat = True
for (node, pid), s in sorted(inc.items()):
    first, last, peak = s[0][1], s[-1][1], max(k for _, k in s)
    span = s[-1][0] - s[0][0]
    # Growth counts from the first sample 5 s into the incarnation: a process sampled in its first
    # second is still loading its state and opening its connections (CI saw a restarted agent go
    # from 4.3 to 13 MB that way, then stay there).
    warm = next(((t, kb) for t, kb in s if t - s[0][0] >= 5), s[-1])
    grew = last - warm[1]
    # "Flat": an incarnation that lived at least 20 s after warming up ends within 50% (or 8 MB)
    # of where it stood then.
    if s[-1][0] - warm[0] >= 20 and grew > max(warm[1] // 2, 8192):
        flat = False
    lines.append(f"   agent {node} pid {pid}: {len(s)} samples over {span} s, RSS {first} -> {last} kB (peak {peak})")
# Duplicates per fault kind: each mark is "<kind> <broker> <lb>", and carries the duplicates that
# arrived after it and before the next mark, and the fate of the messages published in between.
by_kind, n_kind, fig_kind = {}, {}, {}
for m in r.get("marks", []):
    k = m["label"].split()[0]
    by_kind[k] = by_kind.get(k, 0) + m.get("duplicates", 0)
    n_kind[k] = n_kind.get(k, 0) + 1
    f = fig_kind.setdefault(k, {"faults": 0, "published": 0, "received": 0, "lost": 0, "stranded": 0, "duplicates": 0,
                                "duplicates_resent": 0, "longest_gap_ms": 0})
    f["faults"] += 1
    f["longest_gap_ms"] = max(f["longest_gap_ms"], m.get("longest_gap_ms", 0))
    for key in ("published", "received", "stranded", "duplicates", "duplicates_resent"):
        f[key] += m.get(key, 0)
    f["lost"] += m.get("lost_on_survivors", m.get("lost", 0))
if r.get("duplicates_before_marks"):
    by_kind["before-any-fault"] = r["duplicates_before_marks"]
lost = r.get("lost_on_survivors", r["lost"])
dup_pct = 100.0 * r["duplicates"] / max(r["sent"], 1)
# The publisher's own: sent on a connection that broke before the PUBACK and sent again, while
# the first copy got through anyway (labcheck's duplicates_resent; one broker repeats those too).
resent = r.get("duplicates_resent", 0)
cluster_pct = 100.0 * (r["duplicates"] - resent) / max(r["sent"], 1)
longest_gap = max([g["ms"] for g in r.get("gaps", [])] or [0])
targets_met = lost == 0 and r.get("stranded", 0) == 0 and dup_pct <= 1.0 and longest_gap <= 10000
if binding:
    ok = targets_met and flat
elif subscribe == "once":
    ok = flat  # a measurement: its losses are the figures
else:
    ok = r["lost"] == 0 and flat
summary = {"seed": int(seed), "duration_s": int(duration), "subscribe": subscribe, "session_targets_binding": binding,
           "faults": int(faults), "sent": r["sent"], "acked": r["acked"],
           "received": r["received"], "lost": r["lost"], "duplicates": r["duplicates"],
           "dead_letters": r.get("dead_letters", 0), "stranded": r.get("stranded", 0),
           "waiting_in_left_sessions": r.get("waiting_in_left_sessions", 0),
           "longest_gap_ms": max([g["ms"] for g in r.get("gaps", [])] or [0]),
           "lost_on_survivors": lost, "duplicates_pct": round(dup_pct, 2),
           "duplicates_resent_by_publisher": resent, "duplicates_of_the_cluster_pct": round(cluster_pct, 2),
           "duplicates_by_fault": by_kind, "faults_by_kind": n_kind, "by_fault_kind": fig_kind,
           "session_targets_met": targets_met, "memory_flat": flat, "passed": ok}
print(f"chaos: {faults} faults in {duration} s (seed {seed}): sent {r['sent']}, acked {r['acked']}, received {r['received']}, "
      f"lost {r['lost']}, duplicates {r['duplicates']}, longest reception gap {summary['longest_gap_ms'] / 1000:.2f} s")
print(f"   duplicates: {dup_pct:.2f}% of the messages sent; {resent} of them the publisher's own resends (sent on a "
      f"connection that broke before the PUBACK, and again on the next: one broker repeats those too); "
      f"the rest, the cluster's: {cluster_pct:.2f}%")
if summary["waiting_in_left_sessions"]:
    print(f"   sessions the subscriber left behind held {summary['waiting_in_left_sessions']} messages, "
          f"{summary['stranded']} of them never delivered live (stranded on {r.get('stranded_on', {})}); "
          f"collected by returning there")
print("   duplicates per fault kind: " + (", ".join(f"{k} {v} ({n_kind.get(k, 0)} faults)" for k, v in sorted(by_kind.items())) or "none"))
print(f"   subscriber subscribes {subscribe}; per fault kind, the messages published after its faults:")
for k, f in sorted(fig_kind.items()):
    print(f"     {k}: {f['faults']} faults, published {f['published']}, received {f['received']}, lost {f['lost']}, "
          f"stranded {f['stranded']}, duplicates {f['duplicates']} ({100.0 * f['duplicates'] / max(f['published'], 1):.1f}%; "
          f"{f['duplicates_resent']} resent by the publisher), "
          f"longest gap after one {f['longest_gap_ms'] / 1000:.2f} s")
print(f"   issue 13 targets (0 lost, 0 stranded, duplicates <= 1%: {dup_pct:.2f}%, longest gap <= 10 s: {longest_gap / 1000:.2f} s): "
      f"{'met' if targets_met else 'not met'}{'' if binding else ' (not binding; MHA_SESSION_TARGETS=1 makes them so)'}")
print("\n".join(lines))
if ok:
    print("chaos: PASS" if binding or subscribe != "once" else "chaos: MEASURED (subscribe once, targets not binding)")
else:
    why = [f"lost {lost}"] if lost and (binding or subscribe != "once") else []
    if binding and r.get("stranded", 0):
        why.append(f"stranded {r['stranded']}")
    if binding and dup_pct > 1.0:
        why.append(f"duplicates {dup_pct:.2f}% > 1%")
    if binding and longest_gap > 10000:
        why.append(f"reception gap {longest_gap / 1000:.2f} s > 10 s")
    if not flat:
        why.append("agent memory grew")
    print(f"chaos: FAIL ({', '.join(why)})")
if r["lost"]:
    print("   lost sequence numbers:", r.get("lost_seqs", [])[:20])
if report:
    json.dump(summary, open(report, "w"), indent=2)
sys.exit(0 if ok else 1)
PY
