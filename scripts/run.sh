#!/usr/bin/env bash
# Set everything up (idempotent) and start the Hypercore dashboard.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/hypercore" "$@"
