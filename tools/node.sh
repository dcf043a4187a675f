#!/usr/bin/env bash
# A real node for the local cluster (tools/cluster.sh, `make cluster`): this machine joins it with a kubelet
# on Debian's containerd + runc (the private containerd of tools/containerd.sh, where `make images` loads the
# images) and the CNI bridge/host-local/portmap/loopback plugins of Debian's containernetworking-plugins.
#
#   tools/node.sh check   the machine's prerequisites, one line per missing one (exit 1 if any)
#   tools/node.sh up      check, then: the pause image, the pods' bridge and CNI config, containerd,
#                         the kubelet's certificates and config, the kubelet (and kube-proxy when built),
#                         CoreDNS, and kube-router's NetworkPolicy controller (NODE_NETWORK_POLICY=0: not)
#   tools/node.sh down    stop all of it: pods, kubelet, kube-proxy, kube-router, containerd, bridge, rules,
#                         ipsets (idempotent)
#   tools/node.sh build   build kube-router (the NetworkPolicy controller) from its Go module, once
#   tools/node.sh status  what runs
#   tools/node.sh reclaim what a node that was killed rather than stopped left behind (up does it first)
#   tools/node.sh cni-test  without a cluster: a container on the pod network through the CNI plugins
#
# Pods get addresses from POD_CIDR (10.88.0.0/16) on the bridge fdnode0, which holds the gateway 10.88.0.1;
# that address is also the node's InternalIP and where the kubelet listens (10250), so nothing listens on
# or leaves through the machine's network interfaces: pod traffic is not masqueraded and a FORWARD rule
# (in the mangle table, so that no ACCEPT of the filter table comes first) drops whatever from the pod
# network is not for the pod network.
#
# Reads (from tools/cluster.sh): .cluster/kubeconfig (the API server's address), .cluster/pki/ca.crt and
# ca.key (signs the kubelet's and kube-proxy's client certificates), .tools/bin/kubelet and kube-proxy.
# Writes and logs everything under .cluster/node/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.cluster}
NODE_DIR=$CLUSTER_DIR/node
BIN_DIR=${BIN_DIR:-$ROOT/.tools/bin}
ADMIN_KUBECONFIG=$CLUSTER_DIR/kubeconfig
CA_CRT=$CLUSTER_DIR/pki/ca.crt
CA_KEY=$CLUSTER_DIR/pki/ca.key
NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
POD_CIDR=${POD_CIDR:-10.88.0.0/16}
NODE_IP=${NODE_IP:-10.88.0.1}
BRIDGE=${NODE_BRIDGE:-fdnode0}
CLUSTER_DNS=${CLUSTER_DNS:-10.96.0.10}
CLUSTER_DOMAIN=${CLUSTER_DOMAIN:-cluster.local}
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/16}
CNI_NETWORK=frauddemo-pods
GUARD_CHAIN=FRAUDDEMO-NODE
PAUSE_IMAGE=localhost/frauddemo-pause:1.0

# containerd logs under .cluster/node when this script starts it
export CONTAINERD_LOG=${CONTAINERD_LOG:-$NODE_DIR/containerd.log}
export SANDBOX_IMAGE=$PAUSE_IMAGE
# shellcheck source=tools/images.sh
. "$ROOT/tools/images.sh"   # fd_buildah, fd_import, install_packages; and tools/containerd.sh

say() { printf 'node: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

# --- prerequisites ---------------------------------------------------------------------------------------

# One line per missing prerequisite; returns how many are missing. Sysctls the node needs are set when
# FIX=1 (up does, as root), each with a line saying so; `down` puts ip_forward back as it found it.
check_prereqs() {
    local fix=${1:-0} nmiss=0 s v
    [ "$(id -u)" = 0 ] || { say "MISSING root: the kubelet, containerd and the bridge need root"; nmiss=$((nmiss + 1)); }
    if [ -n "$(tail -n +2 /proc/swaps)" ]; then
        say "MISSING swap off: swap is on ($(tail -n +2 /proc/swaps | awk '{print $1}' | paste -sd,)); the kubelet refuses to start (swapoff -a)"
        nmiss=$((nmiss + 1))
    fi
    [ -c /dev/kmsg ] || { say "MISSING /dev/kmsg: the kubelet's OOM watcher reads it (a container without it cannot run a kubelet)"; nmiss=$((nmiss + 1)); }
    if [ ! -d /proc/sys/net/bridge ]; then
        if [ "$fix" = 1 ]; then modprobe br_netfilter 2>/dev/null || true; fi
        [ -d /proc/sys/net/bridge ] || { say "MISSING br_netfilter: no /proc/sys/net/bridge (modprobe br_netfilter)"; nmiss=$((nmiss + 1)); }
    fi
    for s in net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables; do
        [ -e "/proc/sys/$s" ] || continue
        v=$(cat "/proc/sys/$s")
        [ "$v" = 1 ] && continue
        if [ "$fix" = 1 ]; then
            [ "$s" = net/ipv4/ip_forward ] && [ ! -f "$NODE_DIR/ip_forward.before" ] && echo "$v" >"$NODE_DIR/ip_forward.before"
            echo 1 >"/proc/sys/$s" && { say "set ${s//\//.}=1 (was $v)"; continue; }
        fi
        say "MISSING ${s//\//.}=1 (it is $v): Services need routed and bridged pod traffic to pass iptables"
        nmiss=$((nmiss + 1))
    done
    if [ -d /sys/fs/cgroup/memory ] || [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
        # cgroups v1 (or hybrid): one hierarchy per controller
        for s in cpu cpuacct cpuset memory pids devices freezer; do
            grep -qw "$s" <(awk '$3=="cgroup"{print $4}' /proc/mounts | tr ',' '\n') ||
                { say "MISSING cgroup v1 controller $s: not mounted under /sys/fs/cgroup"; nmiss=$((nmiss + 1)); }
        done
    else
        for s in cpu cpuset memory pids; do
            grep -qw "$s" /sys/fs/cgroup/cgroup.controllers ||
                { say "MISSING cgroup v2 controller $s (not in /sys/fs/cgroup/cgroup.controllers)"; nmiss=$((nmiss + 1)); }
        done
    fi
    grep -qw overlay /proc/filesystems || { say "MISSING overlay file system (containerd's overlayfs snapshotter)"; nmiss=$((nmiss + 1)); }
    command -v iptables >/dev/null || { say "MISSING iptables (kube-proxy, the CNI portmap plugin, the FORWARD guard)"; nmiss=$((nmiss + 1)); }
    if [ "$NETWORK_POLICY" = 1 ]; then
        command -v ipset >/dev/null || { say "MISSING ipset (kube-router's NetworkPolicy sets; or NODE_NETWORK_POLICY=0)"; nmiss=$((nmiss + 1)); }
        # the kernel's ip_set and the iptables set match, with a real set and a real rule (then removed)
        if command -v ipset >/dev/null && command -v iptables >/dev/null; then
            ipset destroy FRAUDDEMO-PROBE 2>/dev/null || true
            if ! { ipset create FRAUDDEMO-PROBE hash:ip timeout 0 && ipset add FRAUDDEMO-PROBE 192.0.2.1 &&
                iptables -t filter -N FRAUDDEMO-PROBE && iptables -t filter -A FRAUDDEMO-PROBE -m set --match-set FRAUDDEMO-PROBE dst -j RETURN; } >/dev/null 2>&1; then
                say "MISSING kernel support for ipsets (ip_set, hash:ip) or iptables -m set (xt_set): kube-router needs both; or NODE_NETWORK_POLICY=0"
                nmiss=$((nmiss + 1))
            fi
            iptables -t filter -F FRAUDDEMO-PROBE 2>/dev/null && iptables -t filter -X FRAUDDEMO-PROBE 2>/dev/null || true
            ipset destroy FRAUDDEMO-PROBE 2>/dev/null || true
        fi
    fi
    if [ "${NEED_CLUSTER:-0}" = 1 ]; then
        for s in "$ADMIN_KUBECONFIG" "$CA_CRT" "$CA_KEY" "$BIN_DIR/kubelet"; do
            [ -e "$s" ] || { say "MISSING $s (tools/cluster.sh, make cluster)"; nmiss=$((nmiss + 1)); }
        done
    fi
    return "$nmiss"
}

cgroup_version() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo 2; else echo 1; fi
}

# --- the pause image -------------------------------------------------------------------------------------

# No sandbox image can be pulled here: a static binary that sleeps until told to stop, FROM scratch.
ensure_pause_image() {
    local key out="$FRAUDDEMO_CACHE/pause" c
    key=$(sha256sum "$ROOT/tools/node/pause.c" | cut -c1-16)
    if [ "$(image_label "$PAUSE_IMAGE" io.frauddemo.pause-key)" != "$key" ]; then
        mkdir -p "$out"
        gcc -static -Os -s -Wall -Wextra -o "$out/pause" "$ROOT/tools/node/pause.c"
        c=$(fd_buildah from scratch)
        fd_buildah copy "$c" "$out/pause" /pause >/dev/null
        fd_buildah config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 \
            --label io.frauddemo.pause-key="$key" "$c"
        fd_buildah commit --quiet --rm "$c" "$PAUSE_IMAGE" >/dev/null
        say "pause image $PAUSE_IMAGE built ($(du -h "$out/pause" | cut -f1) static binary)"
    fi
    fd_import "$PAUSE_IMAGE" frauddemo-pause
}

# --- the pod network -------------------------------------------------------------------------------------

network_up() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        say "bridge $BRIDGE created"
    fi
    ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    mkdir -p "$CNI_CONF_DIR" "$NODE_DIR/cni"
    cat >"$CNI_CONF_DIR/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    # Cluster DNS (dns_up) answers at its Service address itself, on the bridge: pods reach it without
    # kube-proxy's DNAT, as a cluster IP (which kube-router's policies let through; see dns_up).
    ip addr replace "$CLUSTER_DNS/32" dev "$BRIDGE"
    # The pod network stays on this machine: forwarded traffic from or to it that is not pod to pod
    # is dropped (Service traffic is DNATed to a pod before FORWARD, so it passes). In the mangle table,
    # which the kernel runs before the filter table, where kube-proxy and kube-router ACCEPT traffic.
    iptables -t mangle -N "$GUARD_CHAIN" 2>/dev/null || iptables -t mangle -F "$GUARD_CHAIN"
    iptables -t mangle -A "$GUARD_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j RETURN
    iptables -t mangle -A "$GUARD_CHAIN" -s "$POD_CIDR" -j DROP
    iptables -t mangle -A "$GUARD_CHAIN" -d "$POD_CIDR" -j DROP
    iptables -t mangle -C FORWARD -j "$GUARD_CHAIN" 2>/dev/null || iptables -t mangle -I FORWARD 1 -j "$GUARD_CHAIN"
    # The API server reaches the kubelet (logs, exec, port-forward) at the node's Hostname address first;
    # where the host name resolves to 127.0.0.1 (/etc/hosts here), that lands on loopback, where the
    # kubelet does not listen: this machine's own connections to 127.0.0.1:10250 go to it instead.
    iptables -t nat -N "$GUARD_CHAIN-LO" 2>/dev/null || iptables -t nat -F "$GUARD_CHAIN-LO"
    iptables -t nat -A "$GUARD_CHAIN-LO" -d 127.0.0.1/32 -p tcp --dport 10250 -j DNAT --to-destination "$NODE_IP:10250"
    iptables -t nat -C OUTPUT -j "$GUARD_CHAIN-LO" 2>/dev/null || iptables -t nat -I OUTPUT 1 -j "$GUARD_CHAIN-LO"
}

# Pods reach the API server (in-cluster clients: the operator, kubectl in a pod) through the `kubernetes`
# Service. A loopback API server (https://127.0.0.1:6443) cannot be its endpoint (endpoints may not be
# loopback) and does not listen where pods can reach. So, for a loopback API server: a relay (socat) on the
# node address 10.88.0.1:6443 to 127.0.0.1:6443 (TLS passes through: clients verify the API server's own
# certificate, whose SANs hold the Service IP), and, unless the API server advertises an address itself,
# an EndpointSlice of the `kubernetes` Service pointing at the relay (deleted by down).
API_SLICE=kubernetes-frauddemo-node
api_from_pods_up() {
    local server host port
    server=$(api_server)
    host=${server#https://}
    host=${host%%/*}
    port=${host##*:}
    host=${host%:*}
    [ "$host" = 127.0.0.1 ] || return 0
    start_daemon api-relay socat "TCP-LISTEN:$port,bind=$NODE_IP,reuseaddr,fork" "TCP:127.0.0.1:$port"
    if kubectl_admin get endpointslices -n default -l kubernetes.io/service-name=kubernetes \
        -o jsonpath='{.items[*].endpoints[*].addresses[*]}' 2>/dev/null | grep -q .; then
        return 0
    fi
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $API_SLICE
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: frauddemo-node}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: https, port: $port, protocol: TCP}]
EOF
    say "the kubernetes Service had no endpoint (the API server advertises loopback): EndpointSlice $API_SLICE -> $NODE_IP:$port (the relay)"
}

api_from_pods_down() {
    stop_daemon api-relay
    if [ -x "$BIN_DIR/kubectl" ] && [ -f "$ADMIN_KUBECONFIG" ]; then
        kubectl_admin delete endpointslice -n default "$API_SLICE" --ignore-not-found --request-timeout=10s >/dev/null 2>&1 || true
    fi
}

# Cluster DNS: CoreDNS (.tools/bin/coredns, built by make cluster-tools from tools/coredns) as a process on
# the node, serving cluster.local (and the reverse zones) from the API server, and nothing else: it
# forwards no query, so none leaves the machine. The kubelet gives pods nameserver $CLUSTER_DNS; the Service
# kube-system/kube-dns holds that address (so no other Service gets it) and CoreDNS answers there itself
# (network_up puts it on the bridge): the Service is labelled for another proxy, so kube-proxy leaves it
# alone. Pods under a default-deny NetworkPolicy that allows DNS to pods (namespaceSelector: {}) thus still
# resolve: kube-router lets pods reach cluster IPs on the node, where a DNAT to the node's own address
# would be traffic to the host, which such a policy refuses. Its EndpointSlice to $NODE_IP:53 tells
# readers where CoreDNS runs. CoreDNS authenticates as system:coredns (a certificate from the cluster CA)
# with the RBAC CoreDNS' own deployment manifests give it.
DNS_SLICE=kube-dns-frauddemo-node
dns_up() {
    [ -x "$BIN_DIR/coredns" ] || { say "no $BIN_DIR/coredns (make cluster-tools): pods have no cluster DNS"; return 0; }
    issue_cert coredns "/CN=system:coredns" client
    write_kubeconfig "$NODE_DIR/coredns.kubeconfig" system:coredns "$NODE_DIR/pki/coredns.crt" "$NODE_DIR/pki/coredns.key"
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns", labels: {app.kubernetes.io/managed-by: frauddemo-node}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns", labels: {app.kubernetes.io/managed-by: frauddemo-node}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
    kubernetes.io/name: CoreDNS
    app.kubernetes.io/managed-by: frauddemo-node
    service.kubernetes.io/service-proxy-name: frauddemo-node-coredns
spec:
  clusterIP: $CLUSTER_DNS
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $DNS_SLICE
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: frauddemo-node}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
EOF
    write_if_changed "$NODE_DIR/Corefile" <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP $CLUSTER_DNS
    errors
    ready $NODE_IP:8181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $NODE_DIR/coredns.kubeconfig system:coredns@local
        pods insecure
        ttl 5
    }
    cache 5
    loadbalance
}
EOF
    start_daemon coredns "$BIN_DIR/coredns" -conf "$NODE_DIR/Corefile"
    local _
    for _ in $(seq 1 150); do
        if curl -sf "http://$NODE_IP:8181/ready" >/dev/null 2>&1; then
            say "coredns ready: $CLUSTER_DOMAIN on $NODE_IP:53, Service kube-system/kube-dns $CLUSTER_DNS"
            return 0
        fi
        kill -0 "$(cat "$NODE_DIR/coredns.pid")" 2>/dev/null || break
        sleep 0.2
    done
    tail -n 20 "$NODE_DIR/coredns.log" >&2
    fail "coredns did not become ready (log $NODE_DIR/coredns.log)"
}

dns_down() {
    stop_daemon coredns
    if [ -x "$BIN_DIR/kubectl" ] && [ -f "$ADMIN_KUBECONFIG" ]; then
        kubectl_admin delete endpointslice -n kube-system "$DNS_SLICE" --ignore-not-found --request-timeout=10s >/dev/null 2>&1 || true
        kubectl_admin delete service -n kube-system kube-dns --ignore-not-found --request-timeout=10s >/dev/null 2>&1 || true
    fi
}

# --- NetworkPolicy enforcement ---------------------------------------------------------------------------

# kube-router's network policy controller (its firewall alone: no routing, no service proxy) runs as a
# process on the node and enforces the NetworkPolicies of the pods here, with iptables chains (KUBE-ROUTER-*,
# KUBE-POD-FW-*, KUBE-NWPLCY-*) and ipsets (KUBE-SRC-*, KUBE-DST-*) on the traffic that crosses the bridge
# (br_netfilter). NODE_NETWORK_POLICY=0 runs the node without it (no policy is enforced then).
NETWORK_POLICY=${NODE_NETWORK_POLICY:-1}
# The only version the Go module proxy serves here. Its go.mod pins dependencies with published
# vulnerabilities (x/net's HTTP/2, protobuf, grpc, docker's client): the build raises those below; the Go
# checksum database checks every module.
KUBE_ROUTER_VERSION=v2.1.0
KUBE_ROUTER_DEPS=(golang.org/x/net@v0.63.0 golang.org/x/crypto@v0.59.0 golang.org/x/oauth2@v0.38.0
    google.golang.org/grpc@v1.85.0 google.golang.org/protobuf@v1.36.12 github.com/golang/protobuf@v1.5.4
    github.com/docker/docker@v25.0.6+incompatible)
KUBE_ROUTER_PKG=github.com/cloudnativelabs/kube-router/v2

# Builds .tools/bin/kube-router from its Go module once per machine, cached (like tools/cluster-tools.sh's
# binaries) under a key of the version and the raised dependencies.
build_policy_controller() {
    local key cache src t0
    key=$(printf '%s\n' "$KUBE_ROUTER_VERSION" "${KUBE_ROUTER_DEPS[@]}" | sha256sum | cut -c1-12)
    cache=${FRAUDDEMO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/frauddemo/cluster-tools}/kube-router-$KUBE_ROUTER_VERSION-$key
    mkdir -p "$cache" "$BIN_DIR"
    if [ ! -x "$cache/kube-router" ]; then
        command -v go >/dev/null || fail "Go is not installed: it builds kube-router (NetworkPolicy enforcement); NODE_NETWORK_POLICY=0 runs the node without it"
        say "building kube-router $KUBE_ROUTER_VERSION from its Go module into $cache (once; minutes on 2 cores)"
        t0=$SECONDS
        src=$cache/src
        rm -rf "$src" && mkdir -p "$src"
        if ! (cd "$src" && go mod init frauddemo.local/kube-router-build &&
            go get "$KUBE_ROUTER_PKG/cmd/kube-router@$KUBE_ROUTER_VERSION" "${KUBE_ROUTER_DEPS[@]}" &&
            nice -n 10 go build -trimpath -o "$cache/.partial-kube-router" \
                -ldflags "-s -w -X $KUBE_ROUTER_PKG/pkg/version.Version=$KUBE_ROUTER_VERSION" \
                "$KUBE_ROUTER_PKG/cmd/kube-router" &&
            mv "$cache/.partial-kube-router" "$cache/kube-router") >"$cache/build.log" 2>&1; then
            tail -30 "$cache/build.log" >&2
            fail "building kube-router failed (whole log: $cache/build.log)"
        fi
        say "kube-router built in $((SECONDS - t0)) s"
    fi
    ln -sfn "$cache/kube-router" "$BIN_DIR/kube-router"
}

# kube-router as system:kube-router (a certificate from the cluster CA) with what its network policy
# controller reads (its informers also list Services, Endpoints and EndpointSlices); started once the Node
# is registered (it reads its own Node's address), ready when its top-level chains are in place.
policy_up() {
    if [ "$NETWORK_POLICY" != 1 ]; then
        say "NODE_NETWORK_POLICY=$NETWORK_POLICY: no NetworkPolicy controller, policies are not enforced on this node"
        return 0
    fi
    build_policy_controller
    issue_cert kube-router "/CN=system:kube-router" client
    write_kubeconfig "$NODE_DIR/kube-router.kubeconfig" system:kube-router \
        "$NODE_DIR/pki/kube-router.crt" "$NODE_DIR/pki/kube-router.key"
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:kube-router", labels: {app.kubernetes.io/managed-by: frauddemo-node}}
rules:
- apiGroups: [""]
  resources: [pods, namespaces, nodes, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:kube-router", labels: {app.kubernetes.io/managed-by: frauddemo-node}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-router"}]
EOF
    # no health or metrics port: nothing listens
    start_daemon kube-router "$BIN_DIR/kube-router" \
        --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
        --kubeconfig="$NODE_DIR/kube-router.kubeconfig" --hostname-override="$NODE_NAME" \
        --service-cluster-ip-range="$SERVICE_CIDR" --enable-ipv4=true --enable-ipv6=false \
        --health-port=0 --metrics-port=0 --v=1
    local _
    for _ in $(seq 1 150); do
        if iptables -t filter -L KUBE-ROUTER-FORWARD -n >/dev/null 2>&1 &&
            iptables -t filter -L KUBE-NWPLCY-DEFAULT -n >/dev/null 2>&1; then
            say "kube-router enforces NetworkPolicies on this node ($("$BIN_DIR/kube-router" --version 2>&1 | head -1))"
            return 0
        fi
        kill -0 "$(cat "$NODE_DIR/kube-router.pid")" 2>/dev/null || break
        sleep 0.2
    done
    tail -n 20 "$NODE_DIR/kube-router.log" >&2
    fail "kube-router did not set up its chains (log $NODE_DIR/kube-router.log); NODE_NETWORK_POLICY=0 runs the node without it"
}

# kube-router's chains (the jumps to them first) and ipsets, whether it stopped or was killed.
policy_rules_down() {
    local ipt chain n chains c set
    for ipt in iptables ip6tables; do
        command -v "$ipt" >/dev/null || continue
        for chain in INPUT FORWARD OUTPUT; do
            while n=$("$ipt" -t filter -L "$chain" -n --line-numbers 2>/dev/null |
                awk '$2 ~ /^KUBE-ROUTER-(INPUT|FORWARD|OUTPUT)$/ {print $1; exit}') && [ -n "$n" ]; do
                "$ipt" -t filter -D "$chain" "$n"
            done
        done
        chains=$("$ipt-save" -t filter 2>/dev/null | awk '/^:KUBE-(ROUTER-|POD-FW-|NWPLCY-)/ {print substr($1, 2)}')
        for c in $chains; do "$ipt" -t filter -F "$c"; done
        for c in $chains; do "$ipt" -t filter -X "$c"; done
        [ -z "$chains" ] || say "$ipt: kube-router's $(echo "$chains" | wc -l) chains deleted"
    done
    command -v ipset >/dev/null || return 0
    n=0
    for set in $(ipset list -n 2>/dev/null | grep -E '^(inet6:)?KUBE-(SRC|DST)-'); do
        ipset destroy "$set" && n=$((n + 1))
    done
    [ "$n" = 0 ] || say "kube-router's $n ipsets destroyed"
}

policy_down() {
    stop_daemon kube-router
    policy_rules_down
    if [ -x "$BIN_DIR/kubectl" ] && [ -f "$ADMIN_KUBECONFIG" ]; then
        kubectl_admin delete clusterrolebinding,clusterrole "system:kube-router" --ignore-not-found --request-timeout=10s >/dev/null 2>&1 || true
    fi
}

# CNI DEL for every pod sandbox containerd still has (as the kubelet would on pod removal): frees the
# addresses, removes the veths and the portmap rules.
# Prints the sandboxes' network namespace paths, for deletion once their processes are gone.
cni_del_sandboxes() {
    containerd_running || return 0
    local id netns
    for id in $(fd_ctr containers ls -q 'labels."io.cri-containerd.kind"==sandbox' 2>/dev/null); do
        netns=$(fd_ctr containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
print(next((n.get("path", "") for n in spec.get("linux", {}).get("namespaces", []) if n["type"] == "network"), ""))')
        [ -n "$netns" ] || continue
        cni_run DEL "$id" "$netns" eth0 >/dev/null 2>&1 || true
        echo "$netns"
    done
}

# Runs the conflist's plugins for one container (ADD in order, DEL in reverse) and prints the result.
cni_run() { # ADD|DEL container-id netns-path ifname
    python3 - "$@" "$CNI_CONF_DIR/10-$CNI_NETWORK.conflist" "$CNI_BIN_DIR" <<'EOF'
import json, os, subprocess, sys
command, cid, netns, ifname, conflist, bindir = sys.argv[1:]
conf = json.load(open(conflist))
plugins = conf["plugins"] if command == "ADD" else list(reversed(conf["plugins"]))
prev = None
for p in plugins:
    net = dict(p, name=conf["name"], cniVersion=conf["cniVersion"])
    if prev is not None:
        net["prevResult"] = prev
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_NETNS=netns, CNI_IFNAME=ifname,
               CNI_PATH=bindir)
    r = subprocess.run([os.path.join(bindir, p["type"])], input=json.dumps(net).encode(), env=env,
                       capture_output=True)
    if r.returncode != 0:
        sys.exit(f"{p['type']} {command}: {r.stdout.decode()} {r.stderr.decode()}")
    if command == "ADD" and r.stdout.strip():
        prev = json.loads(r.stdout)
print(json.dumps(prev) if prev else "")
EOF
}

network_down() {
    local ns id
    # named network namespaces whose veth sits on our bridge (CRI's cni-*, cni-test's): delete them
    # (ip names a named namespace with link-netns NAME, an unnamed one with link-netnsid ID)
    for id in $(ip -o link show master "$BRIDGE" 2>/dev/null | grep -oE 'link-netns(id)? [^ ]+' | awk '{print $1 "=" $2}'); do
        case "$id" in
            link-netns=*) ns=${id#*=} ;;
            *) ns=$(ip netns list-id 2>/dev/null | awk -v id="${id#*=}" '$2==id {print $4}') ;;
        esac
        [ -n "$ns" ] && ip netns delete "$ns" 2>/dev/null && say "network namespace $ns deleted"
    done
    rm -f "$CNI_CONF_DIR/10-$CNI_NETWORK.conflist"
    rm -rf "$NODE_DIR/cni/ipam"
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link delete "$BRIDGE" && say "bridge $BRIDGE deleted"
    fi
    local t
    for t in mangle filter; do # filter: where nodes of before held it
        if iptables -t "$t" -L "$GUARD_CHAIN" -n >/dev/null 2>&1; then
            while iptables -t "$t" -D FORWARD -j "$GUARD_CHAIN" 2>/dev/null; do :; done
            iptables -t "$t" -F "$GUARD_CHAIN" && iptables -t "$t" -X "$GUARD_CHAIN"
        fi
    done
    if iptables -t nat -L "$GUARD_CHAIN-LO" -n >/dev/null 2>&1; then
        while iptables -t nat -D OUTPUT -j "$GUARD_CHAIN-LO" 2>/dev/null; do :; done
        iptables -t nat -F "$GUARD_CHAIN-LO" && iptables -t nat -X "$GUARD_CHAIN-LO"
    fi
    if [ -f "$NODE_DIR/ip_forward.before" ]; then
        cat "$NODE_DIR/ip_forward.before" >/proc/sys/net/ipv4/ip_forward
        say "net.ipv4.ip_forward back to $(cat "$NODE_DIR/ip_forward.before")"
        rm -f "$NODE_DIR/ip_forward.before"
    fi
}

# --- certificates and kubeconfigs ------------------------------------------------------------------------

api_server() {
    awk '$1=="server:"{print $2; exit}' "$ADMIN_KUBECONFIG"
}

# A key and a certificate signed by the cluster's CA. usage: client|server; extra SANs for server.
issue_cert() { # name subject usage [san]
    local name=$1 subj=$2 usage=$3 san=${4:-} dir="$NODE_DIR/pki" ext
    mkdir -p "$dir"
    [ -f "$dir/$name.crt" ] && openssl x509 -in "$dir/$name.crt" -noout -checkend 3600 >/dev/null 2>&1 &&
        openssl verify -CAfile "$CA_CRT" "$dir/$name.crt" >/dev/null 2>&1 && return 0
    (umask 077 && openssl genrsa -out "$dir/$name.key" 2048 2>/dev/null)
    openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr" 2>/dev/null
    ext="$dir/$name.ext"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [ "$usage" = server ]; then echo "extendedKeyUsage=serverAuth"; echo "subjectAltName=$san"; else echo "extendedKeyUsage=clientAuth"; fi
    } >"$ext"
    openssl x509 -req -in "$dir/$name.csr" -CA "$CA_CRT" -CAkey "$CA_KEY" -CAcreateserial -CAserial "$dir/ca.srl" \
        -days 30 -sha256 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
    rm -f "$dir/$name.csr" "$ext"
}

# stdin to the file, only if that changes it (kube-proxy exits when its configuration file changes)
write_if_changed() { # file
    local tmp="$1.new"
    cat >"$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

write_kubeconfig() { # file user cert key
    write_if_changed "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $(api_server)
    certificate-authority: $CA_CRT
users:
- name: $2
  user:
    client-certificate: $3
    client-key: $4
contexts:
- name: $2@local
  context: {cluster: local, user: $2}
current-context: $2@local
EOF
    chmod 600 "$1"
}

# --- kubelet and kube-proxy ------------------------------------------------------------------------------

write_kubelet_config() {
    write_if_changed "$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Listens on the pods' bridge address only, never on the machine's interfaces.
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $NODE_DIR/pki/kubelet-server.crt
tlsPrivateKeyFile: $NODE_DIR/pki/kubelet-server.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CA_CRT}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_ADDRESS
# containerd's runc runs with the cgroupfs driver (tools/containerd.sh); they must agree.
cgroupDriver: cgroupfs
failSwapOn: true
# cgroups v$(cgroup_version) on this machine; kubelets from 1.35 refuse v1 unless told.
failCgroupV1: false
clusterDNS: [$CLUSTER_DNS]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: /etc/resolv.conf
registerNode: true
rotateCertificates: false
serializeImagePulls: false
maxPods: 110
# Nothing can be pulled here: never collect the images make images loaded.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 200Mi
  nodefs.available: 5%
  imagefs.available: 5%
staticPodPath: ""
EOF
}

start_daemon() { # name command...: setsid, log and pid file under .cluster/node
    local name=$1
    shift
    if [ -f "$NODE_DIR/$name.pid" ] && kill -0 "$(cat "$NODE_DIR/$name.pid")" 2>/dev/null; then
        say "$name already runs (pid $(cat "$NODE_DIR/$name.pid"))"
        return 0
    fi
    setsid "$@" >>"$NODE_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$NODE_DIR/$name.pid"
    say "$name started (pid $!, log $NODE_DIR/$name.log)"
}

stop_daemon() { # name
    local pidfile="$NODE_DIR/$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "$1 stopped (pid $pid)"
    fi
    # what it forked (socat's connection handlers) is in its process group (setsid): end those too
    kill -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

kubelet_up() {
    issue_cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" client
    issue_cert kubelet-server "/O=system:nodes/CN=system:node:$NODE_NAME" server "DNS:$NODE_NAME,IP:$NODE_IP,IP:127.0.0.1"
    write_kubeconfig "$NODE_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" \
        "$NODE_DIR/pki/kubelet-client.crt" "$NODE_DIR/pki/kubelet-client.key"
    write_kubelet_config
    mkdir -p "$NODE_DIR/kubelet"
    start_daemon kubelet "$BIN_DIR/kubelet" \
        --config="$NODE_DIR/kubelet.yaml" \
        --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
        --root-dir="$NODE_DIR/kubelet" \
        --hostname-override="$NODE_NAME" \
        --node-ip="$NODE_IP" \
        --node-labels="frauddemo.io/real-node=true" \
        --v=2
}

kube_proxy_up() {
    [ -x "$BIN_DIR/kube-proxy" ] || { say "no $BIN_DIR/kube-proxy: Services have no proxy on this node"; return 0; }
    issue_cert kube-proxy "/CN=system:kube-proxy" client
    write_kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" system:kube-proxy \
        "$NODE_DIR/pki/kube-proxy.crt" "$NODE_DIR/pki/kube-proxy.key"
    write_if_changed "$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $NODE_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts on loopback and the bridge only, never on the machine's interfaces.
nodePortAddresses: ["127.0.0.0/8", "$NODE_IP/32"]
# Leave the machine's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
EOF
    start_daemon kube-proxy "$BIN_DIR/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=2
}

kubectl_admin() {
    "$BIN_DIR/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"
}

wait_node_ready() {
    [ -x "$BIN_DIR/kubectl" ] || { say "no kubectl in $BIN_DIR: not waiting for the node"; return 0; }
    say "waiting for node $NODE_NAME to be Ready"
    if kubectl_admin wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null 2>&1 ||
        { sleep 5; kubectl_admin wait --for=condition=Ready "node/$NODE_NAME" --timeout=60s >/dev/null 2>&1; }; then
        say "node $NODE_NAME is Ready"
    else
        kubectl_admin get node "$NODE_NAME" -o wide >&2 || true
        tail -n 20 "$NODE_DIR/kubelet.log" >&2
        fail "node $NODE_NAME is not Ready after 3 minutes; see $NODE_DIR/kubelet.log"
    fi
}

# --- subcommands -----------------------------------------------------------------------------------------

cmd_check() {
    mkdir -p "$NODE_DIR"
    local n=0
    NEED_CLUSTER=1 check_prereqs 0 || n=$?
    if [ "$n" = 0 ]; then say "all prerequisites met (cgroups v$(cgroup_version))"; else fail "$n prerequisite(s) missing"; fi
}

cmd_up() {
    mkdir -p "$NODE_DIR"
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        node_running && fail "a node already runs on this machine (bridge $BRIDGE, a kubelet runs): one node per machine; tools/node.sh down (with its CLUSTER_DIR) first"
        say "bridge $BRIDGE exists but no kubelet runs: a node was killed rather than stopped; reclaiming what it left"
        cmd_reclaim
    fi
    install_packages containerd runc containernetworking-plugins buildah iptables openssl gcc libc6-dev socat curl
    [ "$NETWORK_POLICY" != 1 ] || install_packages ipset
    local n=0
    NEED_CLUSTER=1 check_prereqs 1 || n=$?
    [ "$n" = 0 ] || fail "$n prerequisite(s) missing (above): not starting the node"
    choose_driver
    network_up
    api_from_pods_up
    containerd_up
    ensure_pause_image
    kubelet_up
    kube_proxy_up
    dns_up
    wait_node_ready
    policy_up
    say "up: node $NODE_NAME (InternalIP $NODE_IP, pods $POD_CIDR on $BRIDGE); tools/node.sh down stops it"
}

cmd_down() {
    mkdir -p "$NODE_DIR"
    # the Node object goes too when the API server answers, so its pods are not left Terminating on it
    if [ -x "$BIN_DIR/kubectl" ] && [ -f "$ADMIN_KUBECONFIG" ] && [ -f "$NODE_DIR/kubelet.pid" ]; then
        kubectl_admin delete node "$NODE_NAME" --wait=false --request-timeout=10s >/dev/null 2>&1 &&
            say "node $NODE_NAME deleted from the cluster" || true
    fi
    stop_daemon kubelet
    stop_daemon kube-proxy
    policy_down
    dns_down
    api_from_pods_down
    if [ -x "$BIN_DIR/kube-proxy" ] && [ -f "$NODE_DIR/kube-proxy.yaml" ]; then
        "$BIN_DIR/kube-proxy" --cleanup >>"$NODE_DIR/kube-proxy.log" 2>&1 || true
    fi
    local netns t ipt
    netns=$(cni_del_sandboxes)
    containerd_down
    # the pods' network namespaces (CRI's cni-*), now that nothing runs in them
    for t in $netns; do
        case "$t" in /run/netns/* | /var/run/netns/*) ip netns delete "$(basename "$t")" 2>/dev/null || true ;; esac
    done
    network_down
    # the kubelet's mounts: its root directory (bind-mounted on itself) and the pods' volumes
    awk -v d="$NODE_DIR/kubelet" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
        while read -r t; do umount "$t" 2>/dev/null || umount -l "$t"; done
    # the kubelet's own chains: canaries (to notice iptables being flushed), the hint, the localnet firewall
    for ipt in iptables ip6tables; do
        for t in nat filter mangle; do
            "$ipt" -t "$t" -X KUBE-KUBELET-CANARY 2>/dev/null || true
            "$ipt" -t "$t" -X KUBE-IPTABLES-HINT 2>/dev/null || true
        done
        while "$ipt" -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
        while "$ipt" -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
        "$ipt" -F KUBE-FIREWALL 2>/dev/null && "$ipt" -X KUBE-FIREWALL 2>/dev/null || true
    done
    say "down"
}

node_running() { pgrep -x kubelet >/dev/null 2>&1; }

# A node whose processes were killed (a session or CI job ended) leaves its bridge, the pods' network
# namespaces, iptables chains and mounts. Its node directory is found from the kubelet's mounts; `down`
# with it removes the rest (its stop steps find nothing alive).
cmd_reclaim() {
    node_running && fail "a kubelet runs: stop its node with tools/node.sh down (with its CLUSTER_DIR), not reclaim"
    local stale
    stale=$(awk '$2 ~ /\/kubelet$/ && index($2, "/node/kubelet") {print $2; exit}' /proc/mounts)
    if [ -n "$stale" ]; then
        say "reclaiming the node directory ${stale%/kubelet}"
        (NODE_DIR=${stale%/kubelet} CLUSTER_DIR=${stale%/node/kubelet} ADMIN_KUBECONFIG=/nonexistent cmd_down)
    fi
    # pods' namespaces (CRI names them cni-*) that no process uses, with an address on the pod network,
    # whose veth is no longer on a bridge
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^cni-/ {print $1}'); do
        [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || continue
        ip -n "$ns" -o -4 addr show 2>/dev/null | awk '{print $4}' | python3 -c '
import ipaddress, sys
net = ipaddress.ip_network(sys.argv[1])
sys.exit(0 if any(ipaddress.ip_interface(a).ip in net for a in sys.stdin.read().split()) else 1)' "$POD_CIDR" &&
            ip netns delete "$ns" && say "network namespace $ns deleted"
    done
    cmd_down
}

cmd_status() {
    local name
    for name in kubelet kube-proxy coredns kube-router; do
        if [ -f "$NODE_DIR/$name.pid" ] && kill -0 "$(cat "$NODE_DIR/$name.pid")" 2>/dev/null; then
            echo "$name: running (pid $(cat "$NODE_DIR/$name.pid"))"
        else
            echo "$name: stopped"
        fi
    done
    if containerd_running; then echo "containerd: running ($CONTAINERD_ADDRESS)"; else echo "containerd: stopped"; fi
    if ip link show "$BRIDGE" >/dev/null 2>&1; then echo "bridge $BRIDGE: $(ip -br addr show "$BRIDGE" | awk '{print $2, $3}')"; else echo "bridge $BRIDGE: absent"; fi
    if [ -x "$BIN_DIR/kubectl" ] && [ -f "$ADMIN_KUBECONFIG" ]; then kubectl_admin get node "$NODE_NAME" -o wide 2>&1 || true; fi
}

# Without an API server: the runtime half of a pod. A network namespace wired by the CNI plugins with the
# node's conflist, the store image's server in it (ctr), reached from the host at the pod's address; the
# pause image started and stopped. Leaves containerd running; the network too only if the node is up.
CNI_TEST_ID=fd-cni-test
cni_test_cleanup() {
    fd_ctr tasks kill -s SIGKILL "$CNI_TEST_ID" >/dev/null 2>&1 || true
    sleep 0.3
    fd_ctr tasks delete "$CNI_TEST_ID" >/dev/null 2>&1 || true
    fd_ctr containers delete "$CNI_TEST_ID" >/dev/null 2>&1 || true
    cni_run DEL "$CNI_TEST_ID" "/var/run/netns/$CNI_TEST_ID" eth0 >/dev/null 2>&1 || true
    ip netns delete "$CNI_TEST_ID" 2>/dev/null || true
    if ! { [ -f "$NODE_DIR/kubelet.pid" ] && kill -0 "$(cat "$NODE_DIR/kubelet.pid")" 2>/dev/null; }; then
        network_down
    fi
}

cmd_cni_test() {
    mkdir -p "$NODE_DIR"
    local n=0 ip store result rc=0 st
    check_prereqs 1 || n=$?
    [ "$n" = 0 ] || fail "$n prerequisite(s) missing (above)"
    choose_driver
    network_up
    containerd_up
    ensure_pause_image
    trap cni_test_cleanup EXIT
    ip netns add "$CNI_TEST_ID"
    result=$(cni_run ADD "$CNI_TEST_ID" "/var/run/netns/$CNI_TEST_ID" eth0)
    ip=$(printf '%s' "$result" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
    say "CNI ADD: network namespace $CNI_TEST_ID got $ip on $BRIDGE"
    store=$(full_ref "frauddemo-store:$(chart_image | sed 's/.*://')")
    fd_ctr run -d --with-ns "network:/var/run/netns/$CNI_TEST_ID" "$store" "$CNI_TEST_ID" \
        valkey-server --port 6379 --protected-mode no --save "" >/dev/null
    python3 - "$ip" <<'EOF' || rc=1
import socket, sys, time
deadline = time.time() + 20
while True:
    try:
        with socket.create_connection((sys.argv[1], 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            print(f"node: host -> {sys.argv[1]}:6379 PING -> {reply!r}", file=sys.stderr)
            sys.exit(0 if reply.startswith(b"+PONG") else 1)
    except OSError as e:
        if time.time() > deadline:
            sys.exit(f"node: host -> {sys.argv[1]}:6379: {e}")
        time.sleep(0.5)
EOF
    fd_ctr run -d "$PAUSE_IMAGE" fd-cni-pause-check >/dev/null
    sleep 1
    fd_ctr tasks kill -s SIGTERM fd-cni-pause-check >/dev/null
    for _ in $(seq 1 20); do
        st=$(fd_ctr tasks ls | awk '$1=="fd-cni-pause-check"{print $3}')
        [ "$st" = STOPPED ] && break
        sleep 0.2
    done
    fd_ctr tasks delete fd-cni-pause-check >/dev/null 2>&1 || true
    fd_ctr containers delete fd-cni-pause-check >/dev/null 2>&1 || true
    if [ "$st" = STOPPED ]; then say "pause image: runs, and stops on SIGTERM"; else say "pause image: still $st after SIGTERM"; rc=1; fi
    if [ "$rc" = 0 ]; then say "cni-test: ok"; else say "cni-test: FAILED"; fi
    return "$rc"
}

case "${1:-}" in
    check) cmd_check ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    reclaim) cmd_reclaim ;;
    cni-test) cmd_cni_test ;;
    build) build_policy_controller ;;
    *) echo "usage: $0 check|up|down|status|reclaim|cni-test|build" >&2; exit 2 ;;
esac
