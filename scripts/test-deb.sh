#!/usr/bin/env bash
# Builds the .deb, installs it on this machine with dpkg -i, checks what it promises, and purges
# it: a static binary in /usr/bin whose --help works, the man page, the service user, a cluster
# file the agent can read and other users cannot, conffiles kept across a reinstall, a unit that
# `systemd-analyze verify` accepts, and nothing left after purge. Needs root (dpkg -i).
# Usage: scripts/test-deb.sh [path/to/mosquitto-ha_*.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

fails=0 passes=0
pass() { passes=$((passes + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
check() { local what=$1; shift; if "$@" >/tmp/mha-deb-check.out 2>&1; then pass "$what"; else fail "$what: $*"; sed 's/^/     /' /tmp/mha-deb-check.out; fi; }
# mode owner group of a path, e.g. "640 root mosquitto-ha"
perm() { stat -c '%a %U %G' "$1" 2>&1; }
want_perm() { local got; got=$(perm "$1"); if [ "$got" = "$2" ]; then pass "$1 is $2"; else fail "$1 is '$got', want '$2'"; fi; }
gone() { if [ -e "$1" ]; then fail "$1 still there after purge"; else pass "$1 removed by purge"; fi; }

[ "$(id -u)" -eq 0 ] || { echo "test-deb.sh: dpkg -i needs root: sudo scripts/test-deb.sh" >&2; exit 1; }
for tool in dpkg-deb systemd-analyze file adduser man runuser; do
  command -v "$tool" >/dev/null || { echo "test-deb.sh: $tool missing: apt-get install -y dpkg systemd file adduser man-db util-linux" >&2; exit 1; }
done
if dpkg-query -W -f '${Status}' mosquitto-ha 2>/dev/null | grep -q installed; then
  # CI's machine is the session's, where a walk-through may have left the package: CI purges
  # it; on anybody else's machine the test refuses to.
  if [ "${CI:-}" != true ]; then
    echo "test-deb.sh: mosquitto-ha is already installed here; the test would purge it. Remove it first: dpkg --purge mosquitto-ha" >&2
    exit 1
  fi
  echo "test-deb.sh: CI: purging the mosquitto-ha package already installed here, and /etc/mosquitto-ha"
  dpkg --purge mosquitto-ha
  rm -rf /etc/mosquitto-ha
fi

deb=${1:-$(scripts/build-deb.sh | tail -n 1)}
echo "== $deb"
purge() { dpkg --purge mosquitto-ha >/dev/null 2>&1 || true; rm -f /etc/mosquitto-ha/agent.pw /etc/mosquitto-ha/cluster.secret; rmdir /etc/mosquitto-ha 2>/dev/null || true; }
trap purge EXIT

check "dpkg -i installs it" dpkg -i "$deb"
bin=/usr/bin/mosquitto-ha
unit=/lib/systemd/system/mosquitto-ha@.service

# The binary: static, so it runs whatever the host's libc; its help works from $PATH.
want_perm $bin "755 root root"
check "$bin is statically linked (file)" sh -c "file -L $bin | grep -q 'statically linked'"
check "$bin has no dynamic dependencies (ldd)" sh -c "! ldd $bin"
check "mosquitto-ha --help lists the commands" sh -c 'out=$(mosquitto-ha --help 2>&1); echo "$out"; for c in agent check mosquitto haproxy keepalived status decommission; do echo "$out" | grep -q "^  $c " || exit 1; done'
check "mosquitto-ha --help exits 0" mosquitto-ha --help
check "mosquitto-ha agent --help names --node and --config" sh -c 'mosquitto-ha agent --help 2>&1 | grep -q -- "--node" && mosquitto-ha agent --help 2>&1 | grep -q -- "--config"'
# The page is read from the .deb: minimal images tell dpkg not to install /usr/share/man.
check "man page renders and documents every command" sh -c 'page=$(dpkg-deb --fsys-tarfile "'"$deb"'" | tar -xO ./usr/share/man/man1/mosquitto-ha.1.gz | zcat | MANWIDTH=100 man --warnings -l - 2>&1); echo "$page" | grep -q "EXIT STATUS" && ! echo "$page" | grep -qi "warning" && echo "$page" | grep -Eq "^ +decommission$"'
check "mosquitto-ha --version prints the package version" sh -c "$bin --version 2>&1 | grep -qF '$(dpkg-deb -f "$deb" Version)'"

check "the copyright file says no licence is granted yet" grep -q "No licence has been granted yet" /usr/share/doc/mosquitto-ha/copyright

# The service user and who may read the configuration.
check "system user mosquitto-ha exists, no login shell" sh -c 'e=$(getent passwd mosquitto-ha) && uid=$(echo "$e" | cut -d: -f3) && [ "$uid" -lt 1000 ] && echo "$e" | grep -q "nologin$"'
want_perm /etc/mosquitto-ha "750 root mosquitto-ha"
want_perm /etc/mosquitto-ha/cluster.yaml "640 root mosquitto-ha"
want_perm /etc/default/mosquitto-ha "644 root root"
want_perm $unit "644 root root"
check "/etc/default/mosquitto-ha sets ARGS=" grep -q '^ARGS=' /etc/default/mosquitto-ha
check "conffiles: cluster.yaml and /etc/default/mosquitto-ha" sh -c "dpkg-query -W -f '\${Conffiles}' mosquitto-ha | grep -q /etc/mosquitto-ha/cluster.yaml && dpkg-query -W -f '\${Conffiles}' mosquitto-ha | grep -q /etc/default/mosquitto-ha"
check "the unit runs the agent as mosquitto-ha with ARGS and stops restarting on exit 2" sh -c "grep -qx 'User=mosquitto-ha' $unit && grep -q '^ExecStart=/usr/bin/mosquitto-ha agent .*--node %i \$ARGS\$' $unit && grep -qx 'RestartPreventExitStatus=2' $unit && grep -qx 'EnvironmentFile=-/etc/default/mosquitto-ha' $unit && ! grep -q DynamicUser $unit"
check "systemd-analyze verify accepts the unit (instance b1)" sh -c "systemd-analyze verify $unit 2>&1 | tee /dev/stderr | { ! grep -q .; } && systemd-analyze verify /lib/systemd/system/mosquitto-ha@b1.service 2>&1 | { ! grep -q .; }"

# The secrets the example names, written as README says; then the agent's user reads all of
# it (the DynamicUser unit could not: permission denied, restarted forever), and others nothing.
install -m 0640 -g mosquitto-ha /dev/null /etc/mosquitto-ha/agent.pw && echo s3cret-agent >/etc/mosquitto-ha/agent.pw
install -m 0640 -g mosquitto-ha /dev/null /etc/mosquitto-ha/cluster.secret && head -c 32 /dev/urandom | base64 >/etc/mosquitto-ha/cluster.secret
check "the service user reads the cluster file and its secrets (check passes)" runuser -u mosquitto-ha -- $bin check --config /etc/mosquitto-ha/cluster.yaml
check "another user cannot read the cluster file" sh -c '! runuser -u nobody -- cat /etc/mosquitto-ha/cluster.yaml'
check "another user cannot read the agent password" sh -c '! runuser -u nobody -- cat /etc/mosquitto-ha/agent.pw'

# A reinstall (an upgrade) keeps the operator's edit and the permissions.
echo "# edited by the operator" >>/etc/mosquitto-ha/cluster.yaml
check "dpkg -i again (upgrade) succeeds" dpkg -i --force-confold "$deb"
check "the edited cluster file is kept" grep -q "edited by the operator" /etc/mosquitto-ha/cluster.yaml
want_perm /etc/mosquitto-ha/cluster.yaml "640 root mosquitto-ha"

rm -f /etc/mosquitto-ha/agent.pw /etc/mosquitto-ha/cluster.secret
mkdir -p /var/lib/mosquitto-ha && touch /var/lib/mosquitto-ha/state.json
check "dpkg --purge removes it" dpkg --purge mosquitto-ha
for p in $bin $unit /etc/default/mosquitto-ha /etc/mosquitto-ha /var/lib/mosquitto-ha; do gone "$p"; done
check "purge removes the permission overrides" sh -c '! dpkg-statoverride --list "/etc/mosquitto-ha*" | grep -q .'

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
