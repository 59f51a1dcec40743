#!/usr/bin/env bash
# Validate deploy/kubernetes/*.yaml offline against Kubernetes' own schemas (the PyPI
# package kubernetes-validate ships them; no API server is needed), strictly: unknown
# fields are errors. Installs the validator into a virtualenv under target/.
# Usage: scripts/validate-manifests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VALIDATOR_VERSION=1.37.0
# The oldest Kubernetes the manifests promise to work with, and the validator's newest.
KUBERNETES_VERSIONS=(1.29.0 1.37.0)
venv="${CARGO_TARGET_DIR:-target}/manifest-validator"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv"
      python3 -m venv "$venv"
    else
      echo "validate-manifests: needs python3-venv (apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  "$venv/bin/pip" install -q "kubernetes-validate==$VALIDATOR_VERSION"
fi
for version in "${KUBERNETES_VERSIONS[@]}"; do
  "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" deploy/kubernetes/*.yaml
done
echo "validate-manifests: deploy/kubernetes/*.yaml valid for Kubernetes ${KUBERNETES_VERSIONS[*]}"
