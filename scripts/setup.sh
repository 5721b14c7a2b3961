#!/usr/bin/env bash
# Idempotent set-up shared by run.sh and test.sh: Debian packages, the venv, the test guest.
#   scripts/setup.sh [--no-guest]
# Safe to run again and again: each step checks before it acts.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
build_guest=1
[[ "${1:-}" == "--no-guest" ]] && build_guest=0

log() { printf 'setup: %s\n' "$*" >&2; }

PACKAGES=(
  qemu-system-x86 qemu-utils qemu-block-extra qemu-guest-agent
  python3 python3-venv python3-dev python3-rados python3-rbd
  ceph-mon ceph-osd ceph-mgr ceph-common
  tmux xvfb xclip busybox-static cpio zstd kmod socat uuid-runtime
  sway wl-clipboard
  debootstrap e2fsprogs
  librsvg2-bin shellcheck
  openssh-client openssh-server
  virt-viewer tigervnc-viewer x11-apps x11-utils netpbm python3-xlib
)
# --display spice: Debian 13 ships QEMU's SPICE modules apart (Debian 12: qemu-system-common).
if apt-cache show qemu-system-modules-spice >/dev/null 2>&1; then
  PACKAGES+=(qemu-system-modules-spice)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO=(sudo); else
      log "missing Debian packages: ${missing[*]}"
      log "install them as root: apt-get install -y ${missing[*]}"
      exit 1
    fi
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q >&2
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  # The multi-host tests run sshds of their own (tests/integration/sshhosts.py) and need only
  # /usr/sbin/sshd: the system-wide service the package just enabled is turned off again.
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    log "openssh-server installed for the tests; its system service is left disabled"
  fi
fi
# apt-get download (used by the test guest build) needs package lists.
if [[ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]]; then
  if [[ $(id -u) -eq 0 ]]; then apt-get update -q >&2; else sudo apt-get update -q >&2; fi
fi

# The venv: from the system Python (the Ceph bindings only import there).
VENV="$ROOT/.venv"
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.base_prefix == "/usr" else 1)'; then
  log "creating $VENV from /usr/bin/python3 (--system-site-packages)"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.hypercore-installed"
want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [[ ! -f "$stamp" ]] || [[ "$(cat "$stamp")" != "$want" ]] || ! "$VENV/bin/python" -c 'import hypercore_tui, textual, qemu.qmp, PIL, textual_image' 2>/dev/null; then
  log "installing hypercore and its Python dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e "${ROOT}[dev]" >&2
  echo "$want" > "$stamp"
fi
# RBD disks need the Debian Ceph bindings inside the venv (--system-site-packages).
if ! "$VENV/bin/python" -c 'import rados, rbd' 2>/dev/null; then
  log "the venv cannot import the Ceph bindings: install python3-rados python3-rbd"
  exit 1
fi

if ((build_guest)); then
  bash "$ROOT/scripts/build-guests.sh"
fi
log "ready"
