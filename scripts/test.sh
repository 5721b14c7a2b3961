#!/usr/bin/env bash
# Set everything up (idempotent), then run every check: ruff, mypy (strict), the
# import-layer contracts and the full pytest suite against real QEMU/qemu-ga/Ceph.
# Exits non-zero when anything fails or when no test ran.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
PY="$ROOT/.venv/bin"
export HYPERCORE_ACCEL=tcg   # nested KVM hangs on the development machines

echo "== ruff"
"$PY/ruff" check hypercore_tui tests scripts
echo "== mypy --strict"
"$PY/mypy" hypercore_tui
echo "== import layers"
"$PY/lint-imports" --no-cache
echo "== pytest"
set +e
"$PY/pytest" -p no:cacheprovider "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "test.sh: no tests ran" >&2
  exit 1
fi
exit $status
