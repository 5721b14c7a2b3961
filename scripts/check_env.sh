#!/usr/bin/env bash
# One line per item: what this host offers Hypercore. Exit non-zero when something
# required is missing. Same as `hypercore check-env`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -x "$ROOT/.venv/bin/python" ]]; then
  exec "$ROOT/.venv/bin/python" -m hypercore_tui check-env
fi
exec /usr/bin/python3 -c "import sys; sys.path.insert(0, '$ROOT'); from hypercore_tui.cli import entry; sys.argv[1:] = ['check-env']; entry()"
