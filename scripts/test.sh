#!/usr/bin/env bash
# Runs every test of mosquitto-ha on a fresh Debian 12 machine.
# Installs what the tests need (real Mosquitto, HAProxy, keepalived, iproute2) when it is missing,
# then runs the Go tests. Usage: scripts/test.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v haproxy >/dev/null || need+=(haproxy)
command -v keepalived >/dev/null || need+=(keepalived)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)  # the benchmark scripts summarise JSON with it
command -v nft >/dev/null || need+=(nftables)      # bench-reference.sh counts bytes between brokers
command -v iftop >/dev/null || need+=(iftop)        # ... and also measures them as the study did
command -v dpkg-deb >/dev/null || need+=(dpkg)      # test-deb.sh builds, installs and purges the .deb
command -v systemd-analyze >/dev/null || need+=(systemd)  # ... verifies its unit
command -v adduser >/dev/null || need+=(adduser)    # ... whose postinst creates the service user
command -v file >/dev/null || need+=(file)          # ... checks the binary is static
command -v man >/dev/null || need+=(man-db)         # ... renders its man page
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: missing ${need[*]}; run as root or: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "scripts/test.sh: Go 1.26 is required (https://go.dev/dl)" >&2; exit 1; }

go vet ./...

# Smoke runs of the scripts and benchmarks, seconds each, so none of them can rot.
echo "== smoke: scripts/demo.sh --for 1s"
scripts/demo.sh --for 1s >/tmp/mha-demo-smoke.log 2>&1 || { cat /tmp/mha-demo-smoke.log; exit 1; }
grep -q "hello from b1" /tmp/mha-demo-smoke.log || { echo "demo: the message did not cross"; cat /tmp/mha-demo-smoke.log; exit 1; }
echo "== smoke: scripts/bench-relay.sh --smoke"
scripts/bench-relay.sh --smoke
echo "== smoke: scripts/bench-reference.sh --smoke (the study's experiment in the lab)"
scripts/bench-reference.sh --smoke >/tmp/mha-ref-smoke.log 2>&1 || { cat /tmp/mha-ref-smoke.log; exit 1; }
tail -n 12 /tmp/mha-ref-smoke.log
echo "== smoke: scripts/chaos.sh --smoke (random faults in the lab)"
scripts/chaos.sh --smoke --seed 17 # an agent killed, then a broker restarted
echo "== package: scripts/test-deb.sh (build the .deb, dpkg -i, check, purge)"
scripts/test-deb.sh
echo "== smoke: Go benchmarks, one iteration each"
MHA_SCALE_FILTERS=2000 go test -run '^$' -bench . -benchtime 1x ./... >/tmp/mha-bench-smoke.log 2>&1 || { cat /tmp/mha-bench-smoke.log; exit 1; }
grep -E '^(Benchmark|ok|FAIL)' /tmp/mha-bench-smoke.log

# Every test last, so its summary closes the output.
echo "== go test ./..."
go test -count=1 -timeout 20m "$@" ./...
