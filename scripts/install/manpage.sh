#!/usr/bin/env bash
# Prints the mosquitto-ha(1) man page (roff) made from the binary's own help: `BIN --help` for
# the command list and `BIN <command> --help` for each command's flags, so the page says what
# the binary it ships with does. Usage: scripts/install/manpage.sh BIN VERSION
set -euo pipefail
bin=$1 version=$2

# roff escapes: a backslash, and a line that starts with '.' or "'" would be a request.
esc() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/" -e 's/-/\\-/g'; }
help() { "$bin" "$@" --help 2>&1 || true; }

top=$(help)
mapfile -t cmds < <(printf '%s\n' "$top" | sed -n "s/^  \([a-z][a-z-]*\) \{1,\}[^ ].*/\1/p")
[ ${#cmds[@]} -gt 0 ] || { echo "manpage.sh: no command found in \`$bin --help\`:" >&2; printf '%s\n' "$top" >&2; exit 1; }

cat <<HEAD
.TH MOSQUITTO-HA 1 "" "mosquitto-ha $version" "User Commands"
.SH NAME
mosquitto-ha \- clustering sidecar for unmodified Mosquitto brokers
.SH SYNOPSIS
.B mosquitto-ha
.I command
.RB [ \-\-config
.IR cluster.yaml ]
.RI [ flags ]
.SH DESCRIPTION
One agent runs beside each Mosquitto 2.0 broker of a cluster. It learns what the broker's
clients subscribe to from the broker's log (\fB\$SYS/broker/log\fR), tells its peers, and relays
to each peer only the messages that peer's clients want. The same binary prints the Mosquitto,
HAProxy and keepalived configuration of every host from one cluster file, identical on every
host.
.PP
.nf
HEAD
printf '%s\n' "$top" | esc
echo ".fi"
echo ".SH COMMANDS"
for c in "${cmds[@]}"; do
  printf '.SS %s\n.nf\n' "$c"
  help "$c" | esc
  echo ".fi"
done
cat <<'TAIL'
.SH FILES
.TP
.I /etc/mosquitto-ha/cluster.yaml
The cluster file (root:mosquitto-ha 0640). Secrets it names (agent.password_file,
agent.cluster_secret_file) belong beside it with the same owner and mode.
.TP
.I /etc/default/mosquitto-ha
\fBARGS=\fR holds extra flags for every agent of the host, e.g. \fB\-\-metrics 127.0.0.1:9883\fR.
.TP
.I /etc/mosquitto-ha/env
Optional, root only (0600): MOSQUITTO_HA_PASSWORD, MOSQUITTO_HA_CLUSTER_SECRET.
.TP
.I /lib/systemd/system/mosquitto-ha@.service
One agent per node: \fBsystemctl enable \-\-now mosquitto-ha@b1\fR.
.TP
.I /var/lib/mosquitto-ha
The agents' state (the interest of their peers), kept across restarts.
.SH EXIT STATUS
0 success; 1 a failure at run time (broker unreachable, a check that found a fault);
2 a usage or configuration error, which a restart cannot fix (the unit does not restart on it).
.SH SEE ALSO
.BR mosquitto (8),
.BR mosquitto.conf (5),
.BR haproxy (1),
.BR keepalived (8),
.I /usr/share/doc/mosquitto-ha/README.md
TAIL
