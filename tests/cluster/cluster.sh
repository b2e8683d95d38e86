#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for the end-to-end suite: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, built by tests/cluster/build.sh.
#
#   tests/cluster/cluster.sh up DIR [--node BINDIR]
#       start it with its state in DIR (made fresh; it must not exist or be empty); prints
#       `export KUBECONFIG=DIR/kubeconfig PATH=…` (kubectl and helm first on PATH). With --node, also the test node (kuant-test-node from
#       BINDIR, e.g. target/debug), which runs the pods bound to it as processes of BINDIR/kuant:
#       the image ghcr.io/kuant-dev/kuant (any tag) maps to it.
#   tests/cluster/cluster.sh down DIR
#       stop what `up DIR` started, by pid, and nothing else
#   tests/cluster/cluster.sh run [--node BINDIR] -- CMD…
#       up in a temporary DIR, run CMD with KUBECONFIG (and, with a node, KUANT_E2E_AGENT_IMAGE)
#       set and kubectl and helm on PATH, then down, also when CMD fails or the script is interrupted
#
# Everything listens on 127.0.0.1 only, on free ports picked at start. A CA, the API server's
# serving certificate, the service-account key pair and an admin token (group system:masters) are
# made fresh for every `up`. Logs are in DIR/logs/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
IMAGE_REPOSITORY=ghcr.io/kuant-dev/kuant
NODE_NAME=kuant-test-node
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a process in the background, its output in DIR/logs/NAME.log, its pid in DIR/pids.
launch() {
  local name=$1
  shift
  "$@" >"$DIR/logs/$name.log" 2>&1 &
  disown
  echo "$! $name $1" >>"$DIR/pids"
}

# Gives up when a component has already died, pointing at its log.
check_alive() {
  local pid name bin
  while read -r pid name bin; do
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$DIR/logs/$name.log" >&2; die "$name exited during start (log above, in $DIR/logs/$name.log)"; }
  done <"$DIR/pids"
}

wait_for() {
  local what=$1 limit=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    check_alive
    ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}

make_credentials() {
  local pki=$DIR/pki
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kuant-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf '%s\n' \
    "subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" >"$pki/apiserver.ext"
  openssl x509 -req -days 2 -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  TOKEN=$(openssl rand -hex 24)
  echo "$TOKEN,kuant-admin,kuant-admin,\"system:masters\"" >"$pki/tokens.csv"
  chmod 600 "$pki"/*.key "$pki/tokens.csv"
}

write_kubeconfig() {
  cat >"$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kuant-test
    cluster:
      server: https://127.0.0.1:$API_PORT
      certificate-authority: $DIR/pki/ca.crt
users:
  - name: kuant-admin
    user:
      token: $TOKEN
contexts:
  - name: kuant-test
    context:
      cluster: kuant-test
      user: kuant-admin
      namespace: default
current-context: kuant-test
EOF
  chmod 600 "$DIR/kubeconfig"
}

up() {
  DIR=$1
  local node_bin=${2:-}
  if [ -n "$node_bin" ]; then
    node_bin=$(cd "$node_bin" && pwd) || die "no directory $2"
    [ -x "$node_bin/kuant" ] && [ -x "$node_bin/kuant-test-node" ] ||
      die "$node_bin lacks kuant or kuant-test-node: cargo build --bin kuant --bin kuant-test-node"
  fi
  if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then die "$DIR is not empty"; fi
  mkdir -p "$DIR/logs"
  DIR=$(cd "$DIR" && pwd)
  local bin started=$SECONDS
  bin=$(bash "$HERE/build.sh" | tail -n 1)
  echo "$bin" >"$DIR/bin"
  make_credentials
  local etcd_port etcd_peer
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  API_PORT=$(free_port)

  # Test data only: no fsync, and a single member.
  launch etcd "$bin/etcd" --name kuant-test --data-dir "$DIR/etcd" --log-level warn \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "kuant-test=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --listen-metrics-urls ""
  wait_for "etcd" 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  # --endpoint-reconciler-type=none: with no node network, the API server would otherwise keep
  # rewriting the `kubernetes` Service's endpoints. Priority and fairness is off: one client (the
  # suite) needs no fairness, and it costs memory and CPU on a 2-core machine.
  launch kube-apiserver "$bin/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" --token-auth-file "$DIR/pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --endpoint-reconciler-type none \
    --enable-priority-and-fairness=false --allow-privileged=true --profiling=false \
    --cert-dir "$DIR/pki/apiserver-generated"
  wait_for "kube-apiserver /readyz" 120 curl -fsS --cacert "$DIR/pki/ca.crt" \
    -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz"
  write_kubeconfig

  # Controllers that have nothing to do without a cloud or node networking are switched off, so
  # that their errors do not drown the log: cloud-node-lifecycle, service-lb and route need a
  # cloud provider; node-ipam allocates pod CIDRs, which the test node does not use. csrsigning
  # needs a signing CA the suite never asks for.
  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$DIR/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" \
    --service-account-private-key-file "$DIR/pki/sa.key" --root-ca-file "$DIR/pki/ca.crt" \
    --use-service-account-credentials --flex-volume-plugin-dir "$DIR/flexvolume" \
    --controllers '*,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller,-node-ipam-controller,-certificatesigningrequest-signing-controller' \
    --profiling=false
  launch kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$DIR/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" --profiling=false

  # Pods need their namespace's ServiceAccount, which the controller manager makes.
  wait_for "the default ServiceAccount" 60 "$bin/kubectl" --kubeconfig "$DIR/kubeconfig" get serviceaccount default
  if [ -n "$node_bin" ]; then
    KUBECONFIG=$DIR/kubeconfig launch kuant-test-node "$node_bin/kuant-test-node" --name "$NODE_NAME" \
      --image "$IMAGE_REPOSITORY=$node_bin/kuant" --work-dir "$DIR/node" --ca-file "$DIR/pki/ca.crt"
    wait_for "the test node to be Ready" 60 "$bin/kubectl" --kubeconfig "$DIR/kubeconfig" \
      wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
  fi
  say "up in $((SECONDS - started))s: API server https://127.0.0.1:$API_PORT, state and logs in $DIR"
  echo "export KUBECONFIG=$DIR/kubeconfig PATH=$bin:\$PATH"
}

down() {
  DIR=$1
  [ -f "$DIR/pids" ] || { say "nothing started in $DIR"; return 0; }
  local pid name bin exe pids=()
  # Only processes that are still the binaries we started: a pid reused since is left alone.
  while read -r pid name bin; do
    # (A binary rebuilt since it started shows as "PATH (deleted)".)
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    if [ "${exe% (deleted)}" = "$(readlink -f "$bin")" ]; then
      pids+=("$pid")
    fi
  done < <(tac "$DIR/pids")
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "${pids[@]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  rm -f "$DIR/pids"
  say "stopped ${#pids[@]} processes of $DIR"
}

# `--node BINDIR` among the arguments, if any.
NODE=""
parse_node() {
  if [ "${1:-}" = --node ]; then
    [ -n "${2:-}" ] || die "--node takes a directory"
    NODE=$2
  fi
}

case ${1:-} in
  up)
    [ $# = 2 ] || [ $# = 4 ] || die "usage: $0 up DIR [--node BINDIR]"
    parse_node "${3:-}" "${4:-}"
    up "$2" "$NODE"
    ;;
  down) [ $# = 2 ] || die "usage: $0 down DIR"; down "$2" ;;
  run)
    shift
    parse_node "${1:-}" "${2:-}"
    [ -n "$NODE" ] && shift 2
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || die "usage: $0 run [--node BINDIR] -- CMD…"
    RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kuant-cluster.XXXXXX")
    trap 'down "$RUN_DIR"; [ -n "${KUANT_CLUSTER_KEEP:-}" ] || rm -rf "$RUN_DIR"' EXIT
    trap 'exit 130' INT TERM
    up "$RUN_DIR" "$NODE" >/dev/null
    if [ -n "$NODE" ]; then export KUANT_E2E_AGENT_IMAGE=$IMAGE_REPOSITORY:e2e; fi
    # kubectl and helm of the same build, for tests that drive the cluster as a person would.
    PATH=$(cat "$RUN_DIR/bin"):$PATH KUBECONFIG=$RUN_DIR/kubeconfig "$@"
    ;;
  *) die "usage: $0 up DIR [--node BINDIR] | down DIR | run [--node BINDIR] -- CMD…" ;;
esac
