#!/bin/sh
# Builds the Debian 12 guest image the VM tests boot: one ext4 root filesystem (no partition
# table) made with debootstrap from the machine's own Debian mirror, holding MariaDB, qemu-ga,
# systemd and lvm2 (the LVM test puts the datadir on an LV of a second disk: this machine's kernel
# has no device-mapper, the guest's has), plus the kernel and initrd copied out of it for direct boot.
#
#   tests/vm/build-guest.sh MIRROR OUTDIR
#
# Writes OUTDIR/root.qcow2, OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/versions.txt. OUTDIR must
# not exist yet; on failure it is left for the caller to remove. The harness (tests/src/vm/image.rs)
# calls it under a lock, in a private mount namespace of its own (`unshare --mount --propagation
# private`), and caches the result. It never starts a service on this machine (the packages are
# installed in a chroot with a policy-rc.d that forbids it), no mount it makes can reach the
# machine's own mount table, and a trap unmounts on every way out. The filesystem label is the
# project's own, never a name the machine's disks may use.
#
# What the tests set per VM (the project's .deb, qemu-ga.conf, the tool's config, the writers'
# account) is not here: only the environment a user's VM would already have.
set -eu

MIRROR=$1
OUT=$2
SIZE=3G

mkdir "$OUT"
mnt=$OUT/mnt
mkdir "$mnt"
img=$OUT/root.raw

LABEL=mss-guest-root

cleanup() {
	for m in "$mnt/dev" "$mnt/proc" "$mnt/sys" "$mnt"; do
		if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" || true; fi
	done
}
trap cleanup EXIT
trap 'cleanup; exit 1' INT TERM

# Belt and braces for a caller that did not give us a private mount namespace: stop here.
if [ "$(findmnt -n -o PROPAGATION /)" = shared ]; then
	echo "build-guest.sh: run me in a private mount namespace (unshare --mount --propagation private)" >&2
	exit 1
fi

truncate -s "$SIZE" "$img"
mkfs.ext4 -q -L "$LABEL" "$img"
mount -o loop "$img" "$mnt"

debootstrap --variant=minbase --include=systemd-sysv,udev,iproute2 bookworm "$mnt" "$MIRROR"

# Nothing may start a service while the packages are installed (mariadb-server would start a
# server inside the chroot).
printf '#!/bin/sh\nexit 101\n' >"$mnt/usr/sbin/policy-rc.d"
chmod 755 "$mnt/usr/sbin/policy-rc.d"
mount --bind /dev "$mnt/dev"
mount -t proc proc "$mnt/proc"
mount -t sysfs sysfs "$mnt/sys"
DEBIAN_FRONTEND=noninteractive chroot "$mnt" apt-get -o Acquire::Check-Valid-Until=false \
	install -y --no-install-recommends \
	linux-image-cloud-amd64 initramfs-tools mariadb-server mariadb-client qemu-guest-agent lvm2
chroot "$mnt" apt-get clean
rm -f "$mnt/usr/sbin/policy-rc.d"

# The root filesystem by label; the console on the serial port; the agent's port driver at boot.
echo "LABEL=$LABEL / ext4 rw 0 1" >"$mnt/etc/fstab"
echo guest >"$mnt/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 guest\n' >"$mnt/etc/hosts"
echo virtio_console >>"$mnt/etc/modules"
# A persistent journal, as most servers have: /var/log is then on the frozen root filesystem.
mkdir -p "$mnt/var/log/journal"
# Timers that would write at random moments of a test.
for unit in apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer \
	man-db.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer; do
	ln -sf /dev/null "$mnt/etc/systemd/system/$unit"
done
# The network the tests forward a port to: QEMU's user-mode NIC, address fixed, no DHCP.
mkdir -p "$mnt/etc/systemd/network"
cat >"$mnt/etc/systemd/network/10-qemu-user.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
ln -sf /lib/systemd/system/systemd-networkd.service \
	"$mnt/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# The guest's MariaDB as a replication source would run it: the binary log named relative to
# the datadir (so a copy reads its own), every commit synced, reachable from the forwarded port.
# No MyISAM repair on open: a copy booted from this image must show a broken table to CHECK
# TABLE, not mend it first.
cat >"$mnt/etc/mysql/mariadb.conf.d/90-snapshot-tests.cnf" <<'EOF'
[mariadbd]
bind-address = 0.0.0.0
server-id = 1
log-bin = binlog
sync-binlog = 1
innodb-buffer-pool-size = 64M
myisam-recover-options = OFF
EOF

cp "$mnt/boot/vmlinuz-"* "$OUT/vmlinuz"
cp "$mnt/boot/initrd.img-"* "$OUT/initrd.img"
chroot "$mnt" dpkg-query -W linux-image-cloud-amd64 mariadb-server qemu-guest-agent systemd lvm2 \
	>"$OUT/versions.txt"

umount "$mnt/dev" "$mnt/proc" "$mnt/sys"
umount "$mnt"
rmdir "$mnt"
qemu-img convert -O qcow2 "$img" "$OUT/root.qcow2"
rm -f "$img"
trap - EXIT INT TERM
