#!/usr/bin/env bash
# Build both test guests, or find them in their caches (idempotent; scripts/setup.sh runs
# it, and scripts/test.sh runs it in the background while the unit and UI tests run).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/build-test-guest.sh" >/dev/null
# The real-distribution guest (Debian 12, ~1.5 min to build): debootstrap needs root.
real_guest=(bash "$ROOT/scripts/build-real-guest.sh")
if [[ $(id -u) -ne 0 ]] && ! "${real_guest[@]}" --check >/dev/null 2>&1; then
  real_guest=(sudo env HOME="$HOME" "${real_guest[@]}")
fi
"${real_guest[@]}" >/dev/null
