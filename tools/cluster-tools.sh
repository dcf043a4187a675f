#!/usr/bin/env bash
# Builds the pinned upstream binaries a local Kubernetes cluster needs (`make cluster-tools`) and links
# them into .tools/bin. The binaries are cached per machine, keyed by the pinned versions, so a fresh
# clone on the same machine (and a second run) rebuilds nothing.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl
#       from k8s.io/kubernetes (tools/kubernetes/go.mod pins it and its staging modules)
#   etcd  from go.etcd.io/etcd/server/v3, at the version that Kubernetes release requires
#   kwok  from sigs.k8s.io/kwok
#   coredns  from github.com/coredns/coredns (tools/coredns: go.mod pins it, main.go picks the plugins),
#       cached apart, under its own key, so changing it rebuilds nothing else
set -euo pipefail
cd "$(dirname "$0")/.."

KWOK_VERSION=v0.7.0
MOD=tools/kubernetes
KUBE_VERSION=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$MOD/go.mod")

if ! command -v go >/dev/null; then
  echo "cluster-tools: Go is not installed; the local cluster needs Go >= 1.24 (https://go.dev/dl) to build Kubernetes' components" >&2
  exit 3
fi

# The version the binaries report (helm and kubectl read the server's): what Kubernetes' own build stamps.
minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
LDFLAGS="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

key=$( (cat "$MOD/go.mod" "$MOD/go.sum"; echo "$LDFLAGS") | sha256sum | cut -c1-12)
cache=${FRAUDDEMO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/frauddemo/cluster-tools}/kubernetes-$KUBE_VERSION-kwok-$KWOK_VERSION-$key
mkdir -p "$cache" .tools/bin

# name -> Go package; etcd's main package is its server module's root.
declare -A pkg=(
  [etcd]=go.etcd.io/etcd/server/v3
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
)
names=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kwok)

missing=()
for n in "${names[@]}"; do [ -x "$cache/$n" ] || missing+=("$n"); done

if [ ${#missing[@]} -gt 0 ]; then
  echo "cluster-tools: building ${missing[*]} (Kubernetes $KUBE_VERSION, kwok $KWOK_VERSION) into $cache;" \
       "the first build takes 10 to 40 minutes on 2 cores"
  start=$SECONDS
  i=0
  for n in "${missing[@]}"; do
    i=$((i + 1))
    t0=$SECONDS
    printf 'cluster-tools: [%d/%d] %s ... ' "$i" "${#missing[@]}" "$n"
    if ! if [ "$n" = kwok ]; then
      # kwok's module has no replace lines, so it installs directly (checked against the Go checksum database).
      GOBIN="$cache/.partial" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" &&
        mv "$cache/.partial/kwok" "$cache/kwok"
    else
      (cd "$MOD" && go build -trimpath -ldflags "$LDFLAGS" -o "$cache/.partial-$n" "${pkg[$n]}") &&
        mv "$cache/.partial-$n" "$cache/$n"
    fi >"$cache/build.log" 2>&1; then
      echo "failed"
      tail -30 "$cache/build.log" >&2
      echo "cluster-tools: building $n failed (whole log: $cache/build.log)" >&2
      exit 1
    fi
    echo "$((SECONDS - t0)) s"
  done
  echo "cluster-tools: built in $((SECONDS - start)) s"
fi

for n in "${names[@]}"; do ln -sfn "$cache/$n" ".tools/bin/$n"; done

# CoreDNS, the cluster DNS of a real node (tools/node.sh): its own module, its own cache key.
DNS_MOD=tools/coredns
COREDNS_VERSION=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$DNS_MOD/go.mod")
dns_key=$(cat "$DNS_MOD/go.mod" "$DNS_MOD/go.sum" "$DNS_MOD/main.go" | sha256sum | cut -c1-12)
dns_cache=$(dirname "$cache")/coredns-$COREDNS_VERSION-$dns_key
mkdir -p "$dns_cache"
if [ ! -x "$dns_cache/coredns" ]; then
  t0=$SECONDS
  printf 'cluster-tools: coredns %s ... ' "$COREDNS_VERSION"
  if ! (cd "$DNS_MOD" && go build -trimpath -ldflags "-s -w" -o "$dns_cache/.partial-coredns" . &&
        mv "$dns_cache/.partial-coredns" "$dns_cache/coredns") >"$dns_cache/build.log" 2>&1; then
    echo "failed"
    tail -30 "$dns_cache/build.log" >&2
    echo "cluster-tools: building coredns failed (whole log: $dns_cache/build.log)" >&2
    exit 1
  fi
  echo "$((SECONDS - t0)) s"
fi
ln -sfn "$dns_cache/coredns" .tools/bin/coredns
# kube-router's network policy controller for the real node: built and cached by node.sh itself.
tools/node.sh build
echo "cluster-tools: Kubernetes $KUBE_VERSION ($("$cache/kube-apiserver" --version 2>/dev/null | awk '{print $2}')), etcd $("$cache/etcd" --version | awk '/etcd Version/ {print $3}'), kwok $KWOK_VERSION, coredns $COREDNS_VERSION in .tools/bin"
