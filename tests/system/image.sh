#!/usr/bin/env bash
# Builds the guest for the system tests (called by tests/system/run.sh; its hash keys the cache):
#   tests/system/image.sh ARCH KABI KVER OUTDIR
# OUTDIR gets vmlinuz, initrd.img and root.img (ext4, bookworm, systemd, udev), with the gpio-sim
# module built out of tree from linux-source-6.1 of the same version KVER as the kernel and its
# headers, and a oneshot unit that runs /mnt/host/guest.sh (the 9p share) at boot.
set -euo pipefail
arch=$1 kabi=$2 kver=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
krel=$kabi-$arch
rootfs=$out/rootfs
rm -rf "$rootfs"
mkdir -p "$rootfs"

# Only the modules the guest needs to mount its root in the initramfs: with MODULES=most,
# mkinitramfs under qemu-user (arm64) takes more than 20 minutes.
essential_hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"
echo MODULES=list > "$1/etc/initramfs-tools/conf.d/yurt-system-test"
cat > "$1/etc/initramfs-tools/hooks/yurt-system-test" <<HOOK
#!/bin/sh
[ "\$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
for m in virtio_pci virtio_mmio virtio_blk ext4; do force_load \$m; done
HOOK
chmod 755 "$1/etc/initramfs-tools/hooks/yurt-system-test"'

# The module: three files of linux-source, unpacked on the host, compiled in the guest's root
# against its headers (under qemu-user for arm64). irq_to_desc is not exported to modules;
# generic_handle_irq does the same job.
customize_hook='set -e
src=$(mktemp -d)
tar -xJf "$1/usr/src/linux-source-6.1.tar.xz" -C "$src" --strip-components=1 \
    linux-source-6.1/drivers/gpio/gpio-sim.c linux-source-6.1/drivers/gpio/gpiolib.h \
    linux-source-6.1/kernel/irq/irq_sim.c
rm -f "$1/usr/src/linux-source-6.1.tar.xz"
m="$1/usr/local/src/gpio-sim"
mkdir -p "$m"
cp "$src/drivers/gpio/gpio-sim.c" "$m/gpio-sim-main.c"
cp "$src/drivers/gpio/gpiolib.h" "$src/kernel/irq/irq_sim.c" "$m/"
rm -rf "$src"
cp "'"$here"'/gpio-sim.Kbuild" "$m/Kbuild"
sed -i "s/handle_simple_irq(irq_to_desc(\([a-z_]*\)))/generic_handle_irq(\1)/" "$m/irq_sim.c"
if grep -n irq_to_desc "$m/irq_sim.c"; then echo "irq_sim.c: irq_to_desc left" >&2; exit 1; fi
chroot "$1" make -s -C "/lib/modules/'"$krel"'/build" M=/usr/local/src/gpio-sim modules
cp "$m/gpio-sim.ko" "$1/usr/local/lib/gpio-sim.ko"
printf "%s\n" "/dev/vda / ext4 rw,errors=remount-ro 0 1" \
    "host /mnt/host 9p trans=virtio,version=9p2000.L,nofail,x-systemd.device-timeout=60s 0 0" > "$1/etc/fstab"
mkdir -p "$1/mnt/host"
printf "%s\n" 9p 9pnet_virtio configfs > "$1/etc/modules-load.d/yurt-system-test.conf"
echo yurt-guest > "$1/etc/hostname"
cat > "$1/etc/systemd/system/yurt-system-test.service" <<UNIT
[Unit]
Description=yurt-ota system tests (/mnt/host/guest.sh)
After=multi-user.target
RequiresMountsFor=/mnt/host
[Service]
Type=oneshot
ExecStart=/bin/bash /mnt/host/guest.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
[Install]
WantedBy=multi-user.target
UNIT
chroot "$1" systemctl enable yurt-system-test.service
chroot "$1" systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
    fstrim.timer systemd-networkd-wait-online.service
cp "$1/boot/vmlinuz-'"$krel"'" "'"$out"'/vmlinuz"
cp "$1/boot/initrd.img-'"$krel"'" "'"$out"'/initrd.img"'

# The mirrors are the host's own (tests/system/run.sh reads them from its apt sources).
mirror=${DEBIAN_MIRROR:?tests/system/run.sh sets DEBIAN_MIRROR}
security=${DEBIAN_SECURITY_MIRROR:?tests/system/run.sh sets DEBIAN_SECURITY_MIRROR}
mmdebstrap --variant=apt --architectures="$arch" \
    --include="systemd-sysv,udev,dbus,kmod,initramfs-tools,zstd,adduser,curl,gpiod,can-utils,procps,iproute2,make,linux-image-$krel=$kver,linux-headers-$krel=$kver,linux-source-6.1=$kver" \
    --essential-hook="$essential_hook" \
    --customize-hook="$customize_hook" \
    bookworm "$rootfs" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main"
[ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -f "$rootfs/usr/local/lib/gpio-sim.ko" ]
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*_Packages
mke2fs -q -t ext4 -d "$rootfs" -F "$out/root.img" 4G
rm -rf "$rootfs"
