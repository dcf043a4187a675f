#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, from the binaries `make cluster-tools` builds, in the way
# Kubernetes' own hack/local-up-cluster.sh runs one: etcd, kube-apiserver (TLS, ServiceAccount token
# signing, the Node and RBAC authorizers, the default admission plugins plus NodeRestriction and
# PodNodeSelector (a namespace's scheduler.alpha.kubernetes.io/node-selector pins its pods, e.g. to the
# kwok nodes or to the real node of tools/node.sh), an audit log),
# kube-controller-manager, kube-scheduler, and kwok managing fake nodes labelled like kind-config.yaml's
# workers, so Pods are scheduled and become Running and Ready.
#
#   tools/cluster.sh up      start it (detached) and wait for /readyz and the nodes; Ctrl-C undoes it
#   tools/cluster.sh down    stop every process it started
#   tools/cluster.sh run     up, then stay in the foreground until Ctrl-C, which stops everything
#   tools/cluster.sh status  which of its processes run
#
# Settings (environment): CLUSTER_DIR (.cluster), API_PORT (6443), ETCD_PORT (2379), FAKE_NODES
# ("store-a:a store-b:b", name:store pairs; set and empty: none, for a cluster whose only node is the real
# one of tools/node.sh). Everything it writes is under CLUSTER_DIR: pki/, the
# kubeconfigs (kubeconfig is the admin one), logs/, pids/, etcd's data and audit.log.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/.tools/bin
DIR=${CLUSTER_DIR:-$ROOT/.cluster}
API_PORT=${API_PORT:-6443}
ETCD_PORT=${ETCD_PORT:-2379}
FAKE_NODES=${FAKE_NODES-"store-a:a store-b:b"}
SERVICE_CIDR=10.96.0.0/16
SERVER=https://127.0.0.1:$API_PORT

log() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

# --- processes -------------------------------------------------------------------------------------

# start NAME CMD...: runs CMD detached in its own session, output to logs/NAME.log, pid in pids/NAME.
start() {
  local name=$1; shift
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$DIR/pids/$name"
}

running() { [ -f "$DIR/pids/$1" ] && kill -0 "$(cat "$DIR/pids/$1")" 2>/dev/null; }

down() {
  local name pid
  # Reverse start order: the apiserver's clients first, etcd last.
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -f "$DIR/pids/$name" ] || continue
    pid=$(cat "$DIR/pids/$name")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$DIR/pids/$name"
  done
  log "stopped"
}

# --- certificates ----------------------------------------------------------------------------------

# cert NAME CN [O] [SANS]: a key and a certificate signed by the cluster CA (client and server use).
cert() {
  local name=$1 cn=$2 org=${3:-} sans=${4:-} subj="/CN=$2"
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$DIR/pki/$name.key" -subj "$subj" \
    -out "$DIR/pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=clientAuth,serverAuth"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$DIR/pki/$name.ext"
  openssl x509 -req -in "$DIR/pki/$name.csr" -CA "$DIR/pki/ca.crt" -CAkey "$DIR/pki/ca.key" \
    -CAcreateserial -days 365 -extfile "$DIR/pki/$name.ext" -out "$DIR/pki/$name.crt" 2>/dev/null
  rm -f "$DIR/pki/$name.csr" "$DIR/pki/$name.ext"
}

pki() {
  [ -f "$DIR/pki/ca.crt" ] && return
  mkdir -p "$DIR/pki"
  chmod 700 "$DIR/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=frauddemo-local-ca" \
    -keyout "$DIR/pki/ca.key" -out "$DIR/pki/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kwok kwok system:masters
  openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
}

# kubeconfig NAME: a kubeconfig that authenticates with pki/NAME.{crt,key}.
kubeconfig() {
  local name=$1 file=$DIR/$1.kubeconfig
  [ "$name" = admin ] && file=$DIR/kubeconfig
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: frauddemo-local
  cluster:
    server: $SERVER
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $DIR/pki/$name.crt
    client-key: $DIR/pki/$name.key
contexts:
- name: frauddemo-local
  context: {cluster: frauddemo-local, user: $name}
current-context: frauddemo-local
EOF
  chmod 600 "$file"
}

# --- components ------------------------------------------------------------------------------------

wait_for() {  # wait_for WHAT SECONDS CMD...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return; sleep 0.2; done
  die "$what did not come up in ${secs}s (logs in $DIR/logs)"
}

up() {
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make cluster-tools"
  done
  for name in etcd kube-apiserver; do
    running "$name" && die "already running (pid $(cat "$DIR/pids/$name")): tools/cluster.sh down first"
  done
  command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
  mkdir -p "$DIR/logs" "$DIR/pids"
  trap 'echo; log "interrupted: stopping what started"; down; exit 130' INT TERM
  local t0=$SECONDS

  pki
  for name in admin controller-manager scheduler kwok; do kubeconfig "$name"; done

  log "etcd on 127.0.0.1:$ETCD_PORT"
  start etcd "$BIN/etcd" --name local --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "local=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "" --log-level warn --quota-backend-bytes 2147483648
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  # Every request is audited at Metadata level, so tests can count the writes a client made.
  cat >"$DIR/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: Metadata
EOF

  log "kube-apiserver on $SERVER"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" \
    --kubelet-client-certificate "$DIR/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$DIR/pki/apiserver-kubelet-client.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/pki/sa.pub" \
    --service-account-signing-key-file "$DIR/pki/sa.key" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction,PodNodeSelector \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/audit.log" \
    --audit-log-format json --audit-log-maxsize 200 \
    --profiling=false
  wait_for kube-apiserver 90 "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get --raw /readyz

  log "kube-controller-manager and kube-scheduler"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "$DIR/pki/sa.key" --root-ca-file "$DIR/pki/ca.crt" \
    --cluster-signing-cert-file "$DIR/pki/ca.crt" --cluster-signing-key-file "$DIR/pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --controllers '*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-persistentvolume-expander'
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false

  # kwok plays the kubelet of the nodes annotated kwok.x-k8s.io/node=fake (and only those): it marks
  # them Ready and takes their pods through Running to Ready.
  log "kwok and fake nodes: $FAKE_NODES"
  start kwok "$BIN/kwok" --kubeconfig "$DIR/kwok.kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.0/16 --node-ip 127.0.0.1 \
    --node-lease-duration-seconds 40 \
    --server-address ""
  local spec name store
  for spec in $FAKE_NODES; do
    name=${spec%%:*} store=${spec#*:}
    "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations: {kwok.x-k8s.io/node: fake}
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    frauddemo.io/store: "$store"
    topology.kubernetes.io/zone: store-$store
spec: {}
EOF
  done
  [ -z "$FAKE_NODES" ] || wait_for "fake nodes" 60 "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" wait node --all --for condition=Ready --timeout 1s
  # The controller-manager gives every namespace its default ServiceAccount; pods need it.
  wait_for "default ServiceAccount" 60 "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get serviceaccount default -n default

  trap - INT TERM
  log "ready in $((SECONDS - t0)) s: export KUBECONFIG=$DIR/kubeconfig  (PATH=$BIN:\$PATH for kubectl)"
}

status() {
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    if running "$name"; then echo "$name: running (pid $(cat "$DIR/pids/$name"))"; else echo "$name: stopped"; fi
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  run)
    up
    # A background sleep ignores SIGINT (no job control here): the trap ends it with the cluster.
    sleeper=""
    trap 'echo; [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; down; exit 0' INT TERM
    log "running; Ctrl-C stops it"
    while true; do sleep 3600 >/dev/null 2>&1 & sleeper=$!; wait "$sleeper"; done ;;
  status) status ;;
  *) echo "usage: $0 up|down|run|status" >&2; exit 2 ;;
esac
