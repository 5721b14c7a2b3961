#!/usr/bin/env bash
# Set everything up (idempotent), then run every check: ruff, mypy (strict), the
# import-layer contracts, shellcheck of the guest scripts and the full pytest suite against
# real QEMU/qemu-ga/Ceph.
# Exits non-zero when anything fails or when no test ran.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The guests are built below, in the background of the unit and UI tests.
bash scripts/setup.sh --no-guest
PY="$ROOT/.venv/bin"
export HYPERCORE_ACCEL=tcg   # nested KVM hangs on the development machines

echo "== ruff"
"$PY/ruff" check hypercore_tui tests scripts
echo "== mypy --strict"
"$PY/mypy" hypercore_tui
echo "== import layers"
"$PY/lint-imports" --no-cache
echo "== shellcheck"
# The scripts Hypercore runs inside guests: POSIX sh for busybox ash and Debian's dash.
shellcheck --shell=sh hypercore_tui/guest/*.sh
echo "== ceph test cluster"
# The RBD tests run against a real single-node cluster of their own: memstore, its own
# directory and free port (beside any dev cluster), purged on exit, also on failure.
# tests/integration/conftest.py finds it through HYPERCORE_TEST_CEPH_CONF and fails
# (never skips) when it is not usable.
CEPH_TEST_DIR=$(mktemp -d /tmp/hc-ceph-test.XXXXXX)
stop_ceph_test_cluster() {
  bash "$ROOT/scripts/ceph-dev.sh" purge --dir "$CEPH_TEST_DIR" >/dev/null 2>&1 \
    || rm -rf -- "$CEPH_TEST_DIR"
}
trap stop_ceph_test_cluster EXIT
CEPH_TEST_PORT=${HYPERCORE_TEST_CEPH_PORT:-$(/usr/bin/python3 -c \
  'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
ceph_t0=$(date +%s.%N)
HYPERCORE_TEST_CEPH_CONF=$(HYPERCORE_CEPH_PORT=$CEPH_TEST_PORT \
  bash scripts/ceph-dev.sh up --memory --dir "$CEPH_TEST_DIR" | tail -n1)
export HYPERCORE_TEST_CEPH_CONF
echo "test.sh: Ceph test cluster up in $(awk -v a="$ceph_t0" -v b="$(date +%s.%N)" \
  'BEGIN { printf "%.1f", b - a }') s (mon 127.0.0.1:$CEPH_TEST_PORT, $HYPERCORE_TEST_CEPH_CONF)"

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }'; }

echo "== pytest"
set +e
if [[ $# -gt 0 ]]; then
  bash scripts/build-guests.sh
  "$PY/pytest" -p no:cacheprovider --durations=40 "$@"
  status=$?
  set -e
  if [[ $status -eq 5 ]]; then
    echo "test.sh: no tests ran" >&2
    exit 1
  fi
  exit $status
fi
# The guest images are built (or found in their cache) in the background while the unit
# and UI tests, which boot nothing, run: ~1.5 minutes of a fresh machine's build hidden.
# A failed build is shown here; the fixtures then try again and fail with its reason.
build_log=$(mktemp /tmp/hc-guest-build.XXXXXX)
build_t0=$(date +%s.%N)
( bash scripts/build-guests.sh \
    && echo "test.sh: guest images ready in $(elapsed "$build_t0") s" ) >"$build_log" 2>&1 &
build_pid=$!
t0=$(date +%s.%N)
# Four workers: these tests mostly wait (pilot pauses, timers), 1.5 min of CPU in 2.9 min
# of wall time serially; -n 4 took 60-64 s on the 2-core development machine.
"$PY/pytest" -p no:cacheprovider -n 4 --durations=15 tests/unit tests/ui
quick=$?
quick_s=$(elapsed "$t0")
wait "$build_pid"
build=$?
tail -n 1 "$build_log"
if [[ $build -ne 0 ]]; then
  echo "test.sh: building the guest images failed (the tests try again):" >&2
  tail -n 30 "$build_log" >&2
fi
rm -f "$build_log"
# The soak (tests/load: 50 idle VMs and the dashboard for 10 minutes, mostly waiting)
# runs beside the integration tests that start no QEMU (fake servers, host-side peers,
# sshd, Ceph: mostly waiting on timeouts, ~30 % of one core over 4 minutes); then the
# tests that boot guests, alone. Each prints its own slowest tests.
t0=$(date +%s.%N)
light_log=$(mktemp /tmp/hc-light-tests.XXXXXX)
"$PY/pytest" -p no:cacheprovider --durations=15 -m "not qemu" tests/integration \
  >"$light_log" 2>&1 &
light_pid=$!
"$PY/pytest" -p no:cacheprovider --durations=10 tests/load
soak=$?
wait "$light_pid"
light=$?
echo "== tests/integration without QEMU (beside the soak)"
cat "$light_log"
rm -f "$light_log"
soak_s=$(elapsed "$t0")
t0=$(date +%s.%N)
"$PY/pytest" -p no:cacheprovider --durations=40 -m qemu tests/integration
qemu=$?
qemu_s=$(elapsed "$t0")
set -e
echo "test.sh: tests/unit + tests/ui ${quick_s} s (exit ${quick}); tests/load beside" \
  "tests/integration without QEMU ${soak_s} s (exit ${soak}, ${light});" \
  "tests/integration with QEMU ${qemu_s} s (exit ${qemu})"
for code in "$quick" "$soak" "$light" "$qemu"; do
  if [[ $code -eq 5 ]]; then
    echo "test.sh: no tests ran" >&2
    exit 1
  fi
done
for code in "$quick" "$soak" "$light" "$qemu"; do
  if [[ $code -ne 0 ]]; then
    exit "$code"
  fi
done
exit 0
