#!/usr/bin/env bash
# Builds the mosquitto-ha .deb from this checkout with dpkg-deb alone (no packaging tool to
# fetch): a static binary (CGO_ENABLED=0), the systemd unit mosquitto-ha@.service, the man page,
# /etc/default/mosquitto-ha and the example /etc/mosquitto-ha/cluster.yaml (conffiles).
#
#   scripts/build-deb.sh [--version V] [--arch amd64|arm64|armhf|i386] [--out DIR]
#
# The version defaults to the newest tag vX.Y.Z (as X.Y.Z), else 0.0.0~git<date>.<commit>, with
# +dirty for uncommitted changes; it is compiled in with -X main.version (the commit with -X
# main.commit). The .deb goes to DIR (default build/, ignored by git); its path is the last line
# printed.
set -euo pipefail
here=$(pwd)
cd "$(dirname "$0")/.."

version="" arch="" out=build
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    --out) out=$(cd "$here" && mkdir -p "$2" && realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
for tool in go dpkg-deb gzip; do
  command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing (apt-get install -y dpkg gzip; Go 1.26 from go.dev)" >&2; exit 1; }
done

if [ -z "$version" ]; then
  if tag=$(git describe --tags --match 'v[0-9]*' --abbrev=0 2>/dev/null); then
    version=${tag#v}
    [ "$(git rev-list -n1 "$tag")" = "$(git rev-parse HEAD)" ] || version="$version+git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=12 HEAD)"
  else
    version="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=12 HEAD)"
  fi
  git diff --quiet HEAD -- 2>/dev/null || version="$version+dirty"
fi
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- 2>/dev/null || commit="$commit-modified"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || { echo "build-deb.sh: version $version: want a Debian version starting with a digit" >&2; exit 2; }

# Debian architecture -> Go's.
arch=${arch:-$(dpkg --print-architecture)}
goarm=""
case "$arch" in
  amd64) goarch=amd64 ;;
  arm64) goarch=arm64 ;;
  armhf) goarch=arm goarm=7 ;;
  i386) goarch=386 ;;
  *) echo "build-deb.sh: --arch $arch: want amd64, arm64, armhf or i386" >&2; exit 2 ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
mkdir -p "$out" "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/default" \
  "$stage/etc/mosquitto-ha" "$stage/usr/share/man/man1" "$stage/usr/share/doc/mosquitto-ha/examples"

# A static binary runs on any Debian (and beyond) whatever its libc: no cgo. -trimpath keeps
# the build machine's paths out. --version reads main.version and main.commit (Go's own VCS
# stamp is missing in a git worktree or where GOFLAGS has -buildvcs=false).
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
  go build -trimpath -buildvcs=auto -ldflags "-s -w -X main.version=$version -X main.commit=$commit" -o "$stage/usr/bin/mosquitto-ha" ./cmd/mosquitto-ha

install -m 0644 scripts/install/mosquitto-ha@.service "$stage/lib/systemd/system/mosquitto-ha@.service"
install -m 0644 scripts/install/default "$stage/etc/default/mosquitto-ha"
install -m 0640 scripts/install/cluster.example.yaml "$stage/etc/mosquitto-ha/cluster.yaml"
install -m 0644 scripts/install/cluster.example.yaml "$stage/usr/share/doc/mosquitto-ha/examples/cluster.yaml"
install -m 0644 README.md "$stage/usr/share/doc/mosquitto-ha/README.md"
# Debian policy wants a copyright file in every package. The owners have not chosen a licence:
# the file says so plainly rather than imply one.
cat >"$stage/usr/share/doc/mosquitto-ha/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mosquitto-ha
Comment: No licence has been granted yet. The owners of mosquitto-ha have not
 chosen a licence; until they do, no right to use, copy, modify or distribute
 this software is granted beyond what the law allows without one. The Go
 modules compiled into the binary (listed by `go version -m
 /usr/bin/mosquitto-ha`) keep their own licences.

Files: *
Copyright: the mosquitto-ha owners
License: none
 No licence granted yet (see Comment above).
COPYRIGHT
chmod 0644 "$stage/usr/share/doc/mosquitto-ha/copyright"
for s in postinst prerm postrm; do install -m 0755 "scripts/install/deb/$s" "$stage/DEBIAN/$s"; done
printf '/etc/default/mosquitto-ha\n/etc/mosquitto-ha/cluster.yaml\n' >"$stage/DEBIAN/conffiles"

# The man page is the binary's own help, so it cannot drift from it. A cross-built binary
# cannot run here: the page then comes from a native build of the same source.
helpbin="$stage/usr/bin/mosquitto-ha"
if [ "$goarch" != "$(go env GOHOSTARCH)" ]; then
  helpbin="$stage/help-bin"
  CGO_ENABLED=0 go build -o "$helpbin" ./cmd/mosquitto-ha
fi
scripts/install/manpage.sh "$helpbin" "$version" | gzip -9n >"$stage/usr/share/man/man1/mosquitto-ha.1.gz"
rm -f "$stage/help-bin"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: mosquitto-ha
Version: $version
Architecture: $arch
Maintainer: mosquitto-ha maintainers <mosquitto-ha@localhost>
Installed-Size: $size
Depends: adduser
Recommends: mosquitto (>= 2.0)
Suggests: haproxy, keepalived, mosquitto-clients
Section: net
Priority: optional
Description: clustering sidecar for unmodified Mosquitto brokers
 mosquitto-ha runs beside each Mosquitto 2.0 broker of a cluster, learns what
 the broker's clients subscribe to from its log, and relays to each peer only
 the messages that peer's clients want. The same binary prints the Mosquitto,
 HAProxy and keepalived configuration of every host from one cluster file.
CONTROL
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"

deb="$out/mosquitto-ha_${version}_${arch}.deb"
# --root-owner-group: every file is root:root whoever builds; the service user's group is set
# by postinst (dpkg-statoverride), since the user does not exist before the package.
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
