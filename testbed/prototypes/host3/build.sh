#!/bin/bash
# Build the host3 prototype initramfs: the testbed's cached storage base.cpio.gz
# (busybox, OpenZFS 2.1 modules + zfs/zpool, sshd) + an overlay cpio with
# libvirtd, virtlogd, virsh, virt-ssh-helper, QEMU (TCG) and firmware, and our /init.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=/var/cache/comet-testbed
KV=$(cat $CACHE/kernel/KVERSION)
BB=$CACHE/kernel/$KV/busybox-root/bin/busybox
OUT=$HERE/out; mkdir -p "$OUT"
T=$(mktemp -d "$HERE/tmp.XXXXXX"); R=$T/root
trap 'rm -rf "$T"' EXIT
mkdir -p "$R"/{lib/x86_64-linux-gnu,lib64,usr/bin,usr/sbin,etc/libvirt,etc/ssh,root/.ssh,usr/lib/x86_64-linux-gnu,usr/lib/libvirt}
copy_bin() {   # copy_bin FILE DESTDIR: FILE and the libraries ldd lists
  local bin=$1 dest=$2 lib
  mkdir -p "$R$dest"; cp -L "$bin" "$R$dest/"
  if ldd "$bin" | grep -q 'not found'; then ldd "$bin" >&2; echo "missing libs for $bin" >&2; exit 1; fi
  for lib in $(ldd "$bin" | awk '/=> \//{print $3}'); do
    [ -e "$R/lib/x86_64-linux-gnu/$(basename "$lib")" ] || cp -L "$lib" "$R/lib/x86_64-linux-gnu/"
  done
}
copy_bin /usr/sbin/libvirtd /usr/sbin
copy_bin /usr/sbin/virtlogd /usr/sbin
copy_bin /usr/bin/virsh /usr/bin
copy_bin /usr/bin/virt-ssh-helper /usr/bin
copy_bin /usr/bin/qemu-system-x86_64 /usr/bin
copy_bin /usr/bin/qemu-img /usr/bin
for f in /usr/lib/libvirt/libvirt_iohelper; do copy_bin "$f" /usr/lib/libvirt; done
D=/usr/lib/x86_64-linux-gnu/libvirt/connection-driver
for so in libvirt_driver_qemu.so libvirt_driver_secret.so; do copy_bin $D/$so $D; done
copy_bin /usr/lib/x86_64-linux-gnu/libvirt/lock-driver/lockd.so /usr/lib/x86_64-linux-gnu/libvirt/lock-driver 2>/dev/null || true
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$R/lib/x86_64-linux-gnu/"
mkdir -p "$R/usr/share"
cp -a /usr/share/qemu /usr/share/seabios /usr/share/libvirt "$R/usr/share/"
[ -d /usr/lib/x86_64-linux-gnu/qemu ] && cp -a /usr/lib/x86_64-linux-gnu/qemu "$R/usr/lib/x86_64-linux-gnu/"
# kernel module for tap (not needed for a NIC-less nested guest, cheap to have)
KM=$CACHE/kernel/$KV/root/lib/modules/$KV
cat > "$R/etc/libvirt/libvirtd.conf" <<'C'
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tls = 0
listen_tcp = 0
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
C
cat > "$R/etc/libvirt/qemu.conf" <<'C'
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
vnc_listen = "127.0.0.1"
C
printf 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n' > "$R/etc/libvirt/virtlogd.conf"
printf 'uri_default = "qemu:///system"\n' > "$R/etc/libvirt/libvirt.conf"
printf 'passwd: files\ngroup: files\nhosts: files\n' > "$R/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n10.200.0.31 comet-proto-host3\n' > "$R/etc/hosts"
printf 'root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\nlibvirt-qemu:x:64055:64055::/var/lib/libvirt:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\nlibvirt:x:120:\nkvm:x:121:\nlibvirt-qemu:x:64055:\n' > "$R/etc/group"
cat > "$R/etc/host3.conf" <<'C'
NAME=comet-proto-host3
ADDR=10.200.0.31
PREFIX=24
POOL=tank
ARC_MAX=134217728
C
install -m 755 "$HERE/host3-init" "$R/init"
# ssh keys (generated here)
[ -f "$HERE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C host3-client -f "$HERE/id_ed25519"
[ -f "$HERE/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C host3 -f "$HERE/host_ed25519"
install -m 600 "$HERE/host_ed25519" "$R/etc/ssh/ssh_host_ed25519_key"
install -m 644 "$HERE/host_ed25519.pub" "$R/etc/ssh/ssh_host_ed25519_key.pub"
install -m 600 "$HERE/id_ed25519.pub" "$R/root/.ssh/authorized_keys"
echo "10.200.0.31 $(cut -d' ' -f1,2 "$HERE/host_ed25519.pub")" > "$HERE/known_hosts"
du -sh "$R" >&2
(cd "$R" && find . | "$BB" cpio -o -H newc 2>/dev/null) | gzip -6 > "$T/overlay.cpio.gz"
cat "$CACHE/storage/base.cpio.gz" "$T/overlay.cpio.gz" > "$OUT/initrd.gz"
cp "$CACHE/guest/vmlinuz" "$OUT/vmlinuz"
ls -la "$CACHE/storage/base.cpio.gz" "$T/overlay.cpio.gz" "$OUT/initrd.gz" >&2
