#!/usr/bin/env bash
# Validates everything in deploy/. Installs the tools it needs when they are missing and
# fails (non-zero, with the reason) when a check fails or a tool cannot be had; it never
# skips a check.
#
#   1. Kubernetes manifests against the official schemas (kubernetes-validate, strict: unknown
#      fields are errors), for the oldest and newest Kubernetes versions below.
#   2. Consistency and content (tools/check_deploy.py): hashrings JSON (parses, 3 endpoints,
#      each pod's --node-name is one of them), StatefulSet/Services/ConfigMaps/Secret agree,
#      objstore and limits examples use only keys Sluice accepts, flags and SLUICE_* variables
#      exist in the sources, the Prometheus example writes to Sluice.
#   3. promtool check config --agent on prometheus/agent.yml.
#   4. systemd-analyze verify on systemd/sluice.service, in a temporary root with a stub
#      /usr/local/bin/sluice; any warning fails (verify itself exits 0 on unknown keys).
#
# Tools: python3 (required), a venv with kubernetes-validate + PyYAML (created under
# $SLUICE_DEPLOY_VENV, default ~/.cache/sluice-deploy-venv), promtool (Debian `prometheus`)
# and systemd-analyze (Debian `systemd`), installed with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")"

KUBE_VERSIONS=(1.30.0 1.37.0)
KUBERNETES_VALIDATE_VERSION=1.37.0

fail() { echo "deploy/validate.sh: FAIL: $*" >&2; exit 1; }
step() { echo "deploy/validate.sh: $*"; }

apt_install() {
  command -v apt-get >/dev/null 2>&1 || fail "$1 is missing and apt-get is not available to install $2"
  step "installing $2 (for $1)"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$2" \
    || fail "apt-get install $2 failed"
  command -v "$1" >/dev/null 2>&1 || fail "$1 still missing after installing $2"
}

# --- tools ---------------------------------------------------------------------------------
command -v python3 >/dev/null 2>&1 || fail "python3 is required"
VENV="${SLUICE_DEPLOY_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/sluice-deploy-venv}"
PY="$VENV/bin/python"
if ! [ -x "$PY" ] || ! "$PY" -c 'import yaml, kubernetes_validate' >/dev/null 2>&1 \
   || [ "$("$PY" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" \
        != "$KUBERNETES_VALIDATE_VERSION" ]; then
  step "creating $VENV with kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" pyyaml \
    || fail "pip install kubernetes-validate failed"
fi
"$PY" -c 'import yaml, kubernetes_validate' || fail "kubernetes-validate/PyYAML not importable from $VENV"
command -v promtool >/dev/null 2>&1 || apt_install promtool prometheus
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd-analyze systemd

# --- 1. Kubernetes schemas -----------------------------------------------------------------
manifests=()
for f in kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
[ ${#manifests[@]} -ge 7 ] || fail "expected the Kubernetes manifests in deploy/kubernetes, found ${#manifests[@]}"
for v in "${KUBE_VERSIONS[@]}"; do
  step "kubernetes-validate --strict -k $v: ${#manifests[@]} files"
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${manifests[@]}" \
    || fail "Kubernetes manifests do not validate against the $v schemas (see above)"
done

# --- 2. consistency ------------------------------------------------------------------------
step "consistency checks (tools/check_deploy.py)"
"$PY" tools/check_deploy.py || fail "consistency checks failed (see above)"

# --- 3. Prometheus agent config ------------------------------------------------------------
step "promtool check config --agent prometheus/agent.yml"
promtool check config --agent prometheus/agent.yml || fail "prometheus/agent.yml is not a valid agent config"

# --- 4. systemd unit -----------------------------------------------------------------------
step "systemd-analyze verify systemd/sluice.service"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/lib/systemd" "$root/etc/sluice"
# The units the service depends on (sysinit.target, network-online.target, ...).
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$d" ]; then cp -r "$d" "$root/usr/lib/systemd/"; break; fi
done
[ -e "$root/usr/lib/systemd/system/multi-user.target" ] || fail "no systemd unit directory to verify against"
printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/bin/sluice"
chmod 0755 "$root/usr/local/bin/sluice"
# ExecReload names /bin/kill; verify checks it exists in the root.
mkdir -p "$root/bin"
printf '#!/bin/sh\nexit 0\n' >"$root/bin/kill"
chmod 0755 "$root/bin/kill"
cp systemd/sluice.service "$root/etc/systemd/system/sluice.service"
cp systemd/sluice.env systemd/hashrings.json systemd/limits.yml "$root/etc/sluice/"
cp objstore/minio.yml "$root/etc/sluice/objstore.yml"
out="$(SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no --root="$root" sluice.service 2>&1)" \
  || { echo "$out" >&2; fail "systemd-analyze verify failed"; }
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify printed warnings (treated as errors)"; }

step "OK: Kubernetes schemas (${KUBE_VERSIONS[*]}), consistency, promtool, systemd-analyze verify"
