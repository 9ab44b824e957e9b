#!/usr/bin/env bash
# Installs the mosquitto-ha agent beside an existing Mosquitto on this host.
#
#   scripts/install.sh --node b1 [--config cluster.yaml] [--prefix /usr/local] [--root DIR]
#
# For hosts without the .deb (scripts/build-deb.sh), e.g. another distribution. Puts a static
# binary in PREFIX/bin, the systemd unit (the package's) in /etc/systemd/system, creates the
# system user mosquitto-ha the unit runs as, and puts the cluster file in /etc/mosquitto-ha,
# root:mosquitto-ha 0640 (an existing one is kept). The previous binary is kept as
# mosquitto-ha.previous for rollback: scripts/install.sh --rollback. --root installs into a
# directory tree (for tests) and skips the user and systemctl.
set -euo pipefail
here=$(pwd)
cd "$(dirname "$0")/.."

node="" config="" prefix=/usr/local root="" rollback=0
while [ $# -gt 0 ]; do
  case "$1" in
    --node) node="$2"; shift 2 ;;
    --config) config=$(cd "$here" && realpath "$2"); shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --root) root=$(cd "$here" && realpath "$2"); shift 2 ;;
    --rollback) rollback=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
bin="$root$prefix/bin/mosquitto-ha"
etc="$root/etc/mosquitto-ha"
unit="$root/etc/systemd/system/mosquitto-ha@.service"
have_systemd() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

if [ "$rollback" = 1 ]; then
  [ -f "$bin.previous" ] || { echo "install.sh: no $bin.previous to roll back to" >&2; exit 1; }
  mv -f "$bin.previous" "$bin"
  echo "install.sh: rolled back $bin to the previous binary"
  have_systemd && systemctl try-restart 'mosquitto-ha@*.service'
  exit 0
fi
[ -n "$node" ] || { echo "install.sh: --node NAME is required (the node of this host in the cluster file)" >&2; exit 2; }
[ -z "$root" ] && [ "$(id -u)" -ne 0 ] && { echo "install.sh: run as root (or use --root DIR)" >&2; exit 1; }

# The unit runs as mosquitto-ha: the cluster file and its secrets are root:mosquitto-ha 0640,
# readable by the agent and no other user.
if [ -z "$root" ] && ! getent passwd mosquitto-ha >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/mosquitto-ha --no-create-home \
    --shell /usr/sbin/nologin --comment "mosquitto-ha agent" mosquitto-ha
fi
group=()
getent group mosquitto-ha >/dev/null && group=(-g mosquitto-ha)
mkdir -p "$(dirname "$bin")" "$(dirname "$unit")" "$root/etc/default"
install -d -m 0750 "${group[@]}" "$etc"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
version=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
CGO_ENABLED=0 go build -trimpath -buildvcs=auto -ldflags "-X main.version=$version -X main.commit=$commit" -o "$tmp" ./cmd/mosquitto-ha
[ -f "$bin" ] && cp -f "$bin" "$bin.previous"
install -m 0755 "$tmp" "$bin"
sed "s#/usr/bin/mosquitto-ha#$prefix/bin/mosquitto-ha#" scripts/install/mosquitto-ha@.service >"$unit"
[ -f "$root/etc/default/mosquitto-ha" ] || install -m 0644 scripts/install/default "$root/etc/default/mosquitto-ha"
if [ -n "$config" ]; then
  if [ -f "$etc/cluster.yaml" ] && ! cmp -s "$config" "$etc/cluster.yaml"; then
    echo "install.sh: keeping the existing $etc/cluster.yaml (new one left as cluster.yaml.new)"
    install -m 0640 "${group[@]}" "$config" "$etc/cluster.yaml.new"
  else
    install -m 0640 "${group[@]}" "$config" "$etc/cluster.yaml"
  fi
elif [ ! -f "$etc/cluster.yaml" ]; then
  install -m 0640 "${group[@]}" scripts/install/cluster.example.yaml "$etc/cluster.yaml.example"
  echo "install.sh: write $etc/cluster.yaml (see cluster.yaml.example next to it)"
fi
if [ -f "$etc/cluster.yaml" ]; then
  "$bin" check --config "$etc/cluster.yaml"
  "$bin" mosquitto --config "$etc/cluster.yaml" --node "$node" --broker-conf "$root/etc/mosquitto/mosquitto.conf" >"$etc/mosquitto-$node.conf.snippet"
  echo "install.sh: review $etc/mosquitto-$node.conf.snippet (it adds only what this host's Mosquitto lacks),"
  echo "  copy it to /etc/mosquitto/conf.d/mosquitto-ha.conf, do the steps printed above, restart mosquitto, then:"
  echo "  $bin check --config $etc/cluster.yaml --node $node"
fi
if have_systemd; then
  systemctl daemon-reload
  systemctl enable "mosquitto-ha@$node.service"
  systemctl try-restart "mosquitto-ha@$node.service"
  echo "install.sh: start it with: systemctl start mosquitto-ha@$node"
fi
echo "installed $bin (previous kept as $bin.previous)"
