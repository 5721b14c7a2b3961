#!/bin/sh
# Runs inside the real test guest's root file system (chroot, as root) at build time:
# scripts/build-real-guest.sh calls it after debootstrap --variant=minbase and after
# copying rootfs/ in. Installs the packages with apt (no recommends), creates the desktop
# user and enables/masks units. Starts nothing: no service runs inside the chroot.
#
# argv: SUITE MIRROR SECURITY_MIRROR   (SECURITY_MIRROR "-" = none)
# stdout: PACKAGE=VERSION lines of the main packages (for the build stamp); all progress
# goes to stderr.
set -eu
exec 3>&1 1>&2
suite=$1 mirror=$2 security=$3
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# What a small headless desktop needs. The kernel comes last, after the initramfs
# configuration is in place, so its initrd is built once.
PACKAGES="systemd systemd-sysv udev dbus dbus-user-session libpam-systemd
    qemu-guest-agent kmod procps iproute2
    xvfb xclip xsel wl-clipboard python3
    spice-vdagent xdg-user-dirs"

log() { printf '[configure] %s\n' "$*" >&2; }

# Apt sources, as the installer writes them.
{
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    if [ "$security" != - ]; then echo "deb $security $suite-security main"; fi
} > /etc/apt/sources.list

# Package scripts must not start services in the chroot.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d

apt_get() { apt-get -q -y -o Dpkg::Use-Pty=0 --no-install-recommends "$@"; }

log "apt-get update + upgrade"
apt-get -q update
apt_get upgrade

log "installing initramfs-tools, zstd"
apt_get install initramfs-tools zstd
# Drivers of the root disk (Hypercore attaches it as virtio-blk-pci) and its file system;
# with MODULES=list (conf.d/hypercore) these are what the initrd loads.
for m in virtio_pci virtio_blk ext4; do
    grep -qx "$m" /etc/initramfs-tools/modules || echo "$m" >> /etc/initramfs-tools/modules
done

log "installing $(echo "$PACKAGES" | tr -s ' \n' ' ')"
# shellcheck disable=SC2086 # a word list
apt_get install $PACKAGES
log "installing linux-image-amd64"
apt_get install linux-image-amd64

rm -f /usr/sbin/policy-rc.d

# The desktop user: uid 1000, bash, no password (console login without one; tty1 logs
# in automatically).
if ! id hcuser >/dev/null 2>&1; then
    useradd --create-home --uid 1000 --user-group --shell /bin/bash \
        --comment "Hypercore test user" hcuser
fi
passwd --delete hcuser >/dev/null
install -m 644 -o hcuser -g hcuser /usr/local/share/hypercore-guest/bash_profile \
    /home/hcuser/.bash_profile

# Units: networkd (DHCP), the X display; the agent is started by its udev rule.
systemctl enable systemd-networkd.service xvfb.service
# Nothing a headless test VM needs: apt/man/e2scrub/fstrim/dpkg-backup timers, waiting
# for the network, first-boot questions.
systemctl mask apt-daily.timer apt-daily-upgrade.timer apt-daily.service \
    apt-daily-upgrade.service man-db.timer e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer dpkg-db-backup.timer systemd-networkd-wait-online.service \
    systemd-firstboot.service

# The DNS server of QEMU's user networking (networkd writes no resolv.conf without
# systemd-resolved).
echo "nameserver 10.0.2.3" > /etc/resolv.conf

apt-get -q clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log /var/log/bootstrap.log
ln -sfn /etc/machine-id /var/lib/dbus/machine-id

# Versions for the build stamp (stdout).
dpkg-query -W -f='${Package}=${Version}\n' systemd qemu-guest-agent xvfb xclip xsel \
    wl-clipboard python3 spice-vdagent "linux-image-$(readlink /vmlinuz | sed 's|.*/vmlinuz-||')" \
    2>/dev/null >&3 || true
