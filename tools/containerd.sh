#!/usr/bin/env bash
# A private containerd (Debian's containerd 1.6 + runc) for this project: its own root, state, socket and
# config under ${XDG_CACHE_HOME:-$HOME/.cache}/frauddemo/containerd, never the system-wide service.
# `make images` imports the images into its k8s.io namespace; tools/node.sh points a kubelet at it (its
# CRI plugin is configured for that: runc with the cgroupfs driver, CNI from /usr/lib/cni, a local pause
# image), so the images are already there when pods start.
#
# Run it:     tools/containerd.sh up | down | status | env
# Source it:  . tools/containerd.sh; containerd_up; fd_ctr images ls; containerd_down
#
# Settings (environment): CONTAINERD_DIR (root/state/config/log; default above), CONTAINERD_ADDRESS (the
# socket; set it to use another, already running containerd instead, e.g. /run/containerd/containerd.sock),
# CONTAINERD_LOG (default $CONTAINERD_DIR/containerd.log), CNI_CONF_DIR (where the CRI plugin reads its
# network config; tools/node.sh writes it), SANDBOX_IMAGE (the pod sandbox image tools/node.sh builds).

FRAUDDEMO_CACHE=${FRAUDDEMO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/frauddemo}
CONTAINERD_DIR=${CONTAINERD_DIR:-$FRAUDDEMO_CACHE/containerd}
CONTAINERD_ADDRESS=${CONTAINERD_ADDRESS:-$CONTAINERD_DIR/run/containerd.sock}
CONTAINERD_LOG=${CONTAINERD_LOG:-$CONTAINERD_DIR/containerd.log}
CNI_CONF_DIR=${CNI_CONF_DIR:-$CONTAINERD_DIR/net.d}
CNI_BIN_DIR=${CNI_BIN_DIR:-/usr/lib/cni}
SANDBOX_IMAGE=${SANDBOX_IMAGE:-localhost/frauddemo-pause:1.0}

# ctr against this containerd, in the namespace the kubelet's CRI uses.
fd_ctr() {
    ctr --address "$CONTAINERD_ADDRESS" --namespace k8s.io "$@"
}

containerd_running() {
    ctr --address "$CONTAINERD_ADDRESS" version >/dev/null 2>&1
}

# Whether this process may lower an OOM score (CAP_SYS_RESOURCE). Where it may not (some sandboxed VMs and
# containers), runc fails every pod sandbox, which the CRI gives oom_score_adj -998, with "can't get final
# child's PID from pipe: EOF"; the CRI plugin then clamps scores at containerd's own.
can_lower_oom_score() {
    sh -c 'echo -1 >/proc/self/oom_score_adj' 2>/dev/null
}

containerd_config() {
    local restrict_oom=false
    can_lower_oom_score || restrict_oom=true
    mkdir -p "$CONTAINERD_DIR/root" "$CONTAINERD_DIR/state" "$(dirname "$CONTAINERD_ADDRESS")" "$CNI_CONF_DIR"
    cat >"$CONTAINERD_DIR/config.toml" <<EOF
# Written by tools/containerd.sh: a private containerd, not the system's.
version = 2
root = "$CONTAINERD_DIR/root"
state = "$CONTAINERD_DIR/state"
disabled_plugins = []

[grpc]
  address = "$CONTAINERD_ADDRESS"

[ttrpc]
  address = "$CONTAINERD_ADDRESS.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # true when this machine refuses to lower OOM scores (no CAP_SYS_RESOURCE): see can_lower_oom_score
  restrict_oom_score_adj = $restrict_oom
  # Nothing can be pulled here: images come from \`make images\` (ctr import) only.
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc || echo /usr/sbin/runc)"
        # cgroups v1 here: the cgroupfs driver (the kubelet's cgroupDriver must match).
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
}

# Starts the private containerd unless one answers at CONTAINERD_ADDRESS already. Idempotent.
containerd_up() {
    if containerd_running; then
        return 0
    fi
    if [ "$CONTAINERD_ADDRESS" != "$CONTAINERD_DIR/run/containerd.sock" ]; then
        echo "containerd: nothing answers at CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS" >&2
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "containerd: starting a containerd needs root (run as root, or start one and set CONTAINERD_ADDRESS)" >&2
        return 1
    fi
    containerd_config
    mkdir -p "$(dirname "$CONTAINERD_LOG")"
    echo "containerd: starting (config $CONTAINERD_DIR/config.toml, log $CONTAINERD_LOG)" >&2
    # setsid: its own session, so it outlives the make that started it and ^C of the caller.
    setsid containerd --config "$CONTAINERD_DIR/config.toml" >>"$CONTAINERD_LOG" 2>&1 </dev/null &
    echo $! >"$CONTAINERD_DIR/containerd.pid"
    local _
    for _ in $(seq 1 100); do
        if containerd_running; then
            return 0
        fi
        if ! kill -0 "$(cat "$CONTAINERD_DIR/containerd.pid")" 2>/dev/null; then
            echo "containerd: exited at start; last lines of $CONTAINERD_LOG:" >&2
            tail -n 20 "$CONTAINERD_LOG" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "containerd: no answer after 20 s; see $CONTAINERD_LOG" >&2
    return 1
}

# Stops the containerd this script started (its pid file), its tasks first. Images stay in its root.
containerd_down() {
    local pidfile="$CONTAINERD_DIR/containerd.pid" pid c
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    # a pid file left by a killed containerd may name another program now
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = containerd ]; then
        for c in $(fd_ctr tasks ls -q 2>/dev/null); do
            fd_ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
        done
        sleep 0.5
        for c in $(fd_ctr containers ls -q 2>/dev/null); do
            fd_ctr tasks delete "$c" >/dev/null 2>&1 || true
            fd_ctr containers delete "$c" >/dev/null 2>&1 || true
        done
        kill "$pid"
        local _
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "containerd: stopped (pid $pid)" >&2
    fi
    rm -f "$pidfile"
    # what its tasks and pod sandboxes left mounted (sandbox /dev/shm, rootfs) under its state
    awk -v d="$CONTAINERD_DIR/state/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        up) containerd_up ;;
        down) containerd_down ;;
        status)
            if containerd_running; then echo "running at $CONTAINERD_ADDRESS"; else echo "not running ($CONTAINERD_ADDRESS)"; exit 1; fi ;;
        env) echo "CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS" ;;
        *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
    esac
fi
