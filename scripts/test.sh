#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing, then runs the whole
# suite (unit tests of every crate and the end-to-end tests against the real binary).
# A missing tool makes this fail loudly; no test skips itself.
set -euo pipefail
trap 'echo "scripts/test.sh: FAILED (line $LINENO): $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."

need_apt=()
# Peers the suite talks to: promtool (Debian `prometheus`) reads the blocks we write.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# The module-cycle check runs on python3.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo is required (Rust toolchain)" >&2; exit 1; }
# The S3-compatible peer of the object-storage tests.
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install --quiet 'moto[server]'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
  # pip may put the script outside PATH (no shim yet): add its scripts directory.
  PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  export PATH
fi
command -v moto_server >/dev/null 2>&1 || { echo "moto_server missing after pip install" >&2; exit 1; }

# The operator material (Kubernetes schemas, hashring, systemd-analyze, promtool): fails the run.
deploy/validate.sh

# Module cycles within a crate (see the script's header): the check's own self-test first, so
# that a broken checker cannot pass a tree by accident, then the tree.
scripts/check-module-cycles --self-test
scripts/check-module-cycles

# The API docs build without a warning, and every intra-doc link resolves.
RUSTDOCFLAGS="-D warnings -D rustdoc::broken_intra_doc_links" cargo doc --workspace --no-deps --locked

cargo test --workspace --all-targets --locked "$@"
