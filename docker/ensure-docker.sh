#!/usr/bin/env bash
# Makes sure a Docker daemon answers `docker info`: installs Debian's docker.io when dockerd is missing
# and starts dockerd when none runs. Idempotent and quick when the daemon is up (`make docker-ready`).
#
# The flags suit a machine whose only network is the host's: no docker0 bridge and no iptables rules
# (nothing of the host's firewall is touched and no private-range addresses appear); builds and
# containers use `--network host`. DOCKERD_FLAGS replaces them, DOCKERD_LOG moves the daemon's log.
set -euo pipefail

flags="${DOCKERD_FLAGS:---bridge=none --iptables=false --ip6tables=false}"
log="${DOCKERD_LOG:-/var/log/cutover-dockerd.log}"
pidfile=/var/run/docker.pid

fail() { echo "ensure-docker: $*" >&2; exit 1; }

# The dockerd named by the pid file, if it is alive: a killed daemon leaves the file behind (and its pid
# may be a zombie for a moment, or reused by another program since).
live_dockerd() {
    local pid
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    [[ "$(cut -d ' ' -f 3 "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
    echo "$pid"
}

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    exit 0
fi

if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    [[ $EUID -eq 0 ]] || fail "dockerd is not installed and installing it (apt-get install docker.io) needs root"
    echo "ensure-docker: installing docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

touch "$log"
logged=$(wc -l <"$log")
if daemon=$(live_dockerd); then
    echo "ensure-docker: dockerd (pid $daemon) is starting; waiting for it"
else
    [[ $EUID -eq 0 ]] || fail "no Docker daemon answers, and starting one needs root"
    # dockerd refuses to start beside a pid file that a killed daemon left.
    rm -f "$pidfile"
    echo "ensure-docker: starting dockerd $flags (log: $log)"
    # shellcheck disable=SC2086  # the flags are words on purpose
    nohup dockerd $flags >>"$log" 2>&1 </dev/null &
    daemon=$!
fi

deadline=$((SECONDS + 60))
until docker info >/dev/null 2>&1; do
    if ! kill -0 "$daemon" 2>/dev/null; then
        tail -n +"$((logged + 1))" "$log" | tail -n 30 >&2
        fail "dockerd exited at start-up (its log above, all of it in $log)"
    fi
    if ((SECONDS > deadline)); then
        tail -n +"$((logged + 1))" "$log" | tail -n 30 >&2
        fail "dockerd did not answer within 60 s (its log above, all of it in $log)"
    fi
    sleep 0.2
done
echo "ensure-docker: dockerd $(docker version -f '{{.Server.Version}}') answers (pid $daemon)"
