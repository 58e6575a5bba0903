#!/usr/bin/env bash
# Validates the Kubernetes deliverables: manifests/*.yaml, the Helm chart charts/kilo, and the YAML and
# command lines in docs/kubernetes.md. Exits non-zero if anything is invalid.
#
# What is checked:
#  - every document against the Kubernetes OpenAPI schemas of $KUBE_VERSION (default 1.33) with the
#    `kubernetes-validate` package in strict mode (unknown fields are errors). Kinds it does not know
#    are errors, except cert-manager's Issuer and Certificate (their required fields are checked here)
#    and kilo.squat.ai Peers (validated against the CRD schema in manifests/crds.yaml);
#  - manifests/crds.yaml (written by the k8s work) when it exists; skipped with a message otherwise;
#  - the chart with Helm itself: `helm-python-sdk` embeds Helm's Go SDK (helm lint and helm template
#    without a helm binary). The chart is linted, rendered with several value sets, and every rendered
#    document is checked like the plain manifests; values.schema.json must reject bad values; the
#    default renders must equal the plain manifests (pod spec, RBAC, conflist);
#  - what schemas cannot see: every kg/kgctl flag used exists in bins/kg/src/cli.rs or
#    bins/kgctl/src/cli.rs with a valid value, RBAC is exactly the minimal set, every volume, $(VAR),
#    ConfigMap key, Service selector and port reference resolves, the conflist is upstream's default,
#    and the install-cni init container's script, run on a scratch directory, installs the plugins and
#    the conflist and removes other CNI configurations.
#
# Not covered: a real API server (admission, defaulting, CRD-backed kinds of cert-manager), the image
# build, and `kg webhook`'s flags while bins/kg/src/cli.rs has no webhook subcommand (reported).
#
# Env: KUBE_VERSION (1.33), KILO_VALIDATE_VENV (the virtualenv for the two Python packages).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION=${KUBE_VERSION:-1.33}
VENV=${KILO_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kilo-rs/validate-venv}
PKGS=("kubernetes-validate==1.37.0" "helm-python-sdk==0.2.2")

if ! "$VENV/bin/python" - "${PKGS[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
then
  echo "validate-manifests: installing ${PKGS[*]} into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PKGS[@]}"
fi

PYTHONDONTWRITEBYTECODE=1 exec "$VENV/bin/python" "scripts/validate_manifests.py" "$KUBE_VERSION"
