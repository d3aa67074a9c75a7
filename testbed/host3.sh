# testbed/host3.sh — sourced by testbed/stack: the third compute host, host3.
#
# A TCG VM on the machine's libvirtd (like the storage servers) whose
# initramfs is the storage servers' shared one (busybox, OpenZFS, sshd, mdev)
# plus libvirtd, virtlogd, virt-ssh-helper and QEMU: a compute host with its
# own ZFS, which local-copy mode (issue 21) needs and the machine itself
# cannot be (its kernel loads no modules).  Comet reaches its libvirtd as it
# reaches host2's (qemu+libssh2, the testbed's key, strict known_hosts) and
# its ZFS over ssh (its [[hosts]] ssh and local_dataset).  Its guests are TCG
# inside TCG: a firmware-only guest starts in seconds; an OS ~35x slower.
# Proven first as testbed/prototypes/host3 (its README has the figures).

HOST3=host3
HOST3_ADDR=10.200.0.31
HOST3_MAC=52:54:00:c0:3e:31
HOST3_MEMORY_MIB=1024
HOST3_DISK_SIZE=2G
HOST3_ARC_MAX=$((128 * 1024 * 1024))
HOST3_TB_CACHE_MIB=256     # QEMU 7.2's default TCG translation cache is 1 GiB of host memory
LOCAL_DATASET=$ZPOOL/comet-local
H3=$STATE/$HOST3

h3uri() {   # as host2's: remote, key + known_hosts, strict
  echo "qemu+libssh2://root@$HOST3_ADDR/system?keyfile=$SSH_KEY&known_hosts=$KNOWN_HOSTS&sshauth=privkey"
}
ssh3() { ssh "${SSH_OPTS[@]}" "root@$HOST3_ADDR" "$@"; }

# The libvirt + QEMU layer shared by every host3 boot ($CACHE/host3/libvirt.cpio.gz).
build_host3_base() {
  local T; T=$(mktemp -d "$CACHE/tmp.host3.XXXXXX")
  local R=$T/root D=/usr/lib/x86_64-linux-gnu/libvirt
  mkdir -p "$R"/{etc/libvirt,usr/share,usr/lib/x86_64-linux-gnu,etc/acpi/PWRF}
  copy_bin "$R" /usr/sbin/libvirtd /usr/sbin
  copy_bin "$R" /usr/sbin/virtlogd /usr/sbin
  copy_bin "$R" /usr/bin/virsh /usr/bin
  copy_bin "$R" /usr/bin/virt-ssh-helper /usr/bin
  copy_bin "$R" /usr/bin/qemu-system-x86_64 /usr/bin
  copy_bin "$R" /usr/lib/libvirt/libvirt_iohelper /usr/lib/libvirt
  copy_bin "$R" "$D/connection-driver/libvirt_driver_qemu.so" "$D/connection-driver"
  copy_bin "$R" "$D/connection-driver/libvirt_driver_secret.so" "$D/connection-driver"
  copy_bin "$R" "$D/lock-driver/lockd.so" "$D/lock-driver"
  cp -a /usr/share/qemu /usr/share/seabios /usr/share/libvirt "$R/usr/share/"
  cp -a /usr/lib/x86_64-linux-gnu/qemu "$R/usr/lib/x86_64-linux-gnu/"   # QEMU's modules (iscsi, ...)
  # no polkit, no dbus, no cgroups: root's own socket, QEMU as root
  cat > "$R/etc/libvirt/libvirtd.conf" <<'C'
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
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
  printf 'root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/bin/false\nlibvirt-qemu:x:64055:64055::/var/lib/libvirt:/bin/false\n' > "$R/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nlibvirt:x:120:\nkvm:x:121:\nlibvirt-qemu:x:64055:\n' > "$R/etc/group"
  install -m 755 "$IMAGES/host3-init" "$R/init"
  install -m 755 "$IMAGES/host3-poweroff" "$R/etc/acpi/PWRF/00000080"
  mkdir -p "$CACHE/host3"
  pack "$R" "$CACHE/host3/libvirt.cpio.gz"
  rm -rf "$T"
}

# host3's initramfs: the storage base + the libvirt layer + its settings and keys.
build_host3_initrd() {
  local T; T=$(mktemp -d "$CACHE/tmp.overlay.XXXXXX")
  mkdir -p "$T/etc/ssh" "$T/root/.ssh" "$H3"
  cat > "$T/etc/comet-host3.conf" <<C
NAME=comet-tb-$HOST3
ADDR=$HOST3_ADDR
PREFIX=$PREFIX
POOL=$ZPOOL
DATASET=$LOCAL_DATASET
ARC_MAX=$HOST3_ARC_MAX
C
  printf '127.0.0.1 localhost\n%s comet-tb-%s\n' "$HOST3_ADDR" "$HOST3" > "$T/etc/hosts"
  install -m 600 "$SSH_DIR/host_${HOST3}_ed25519" "$T/etc/ssh/ssh_host_ed25519_key"
  install -m 644 "$SSH_DIR/host_${HOST3}_ed25519.pub" "$T/etc/ssh/ssh_host_ed25519_key.pub"
  install -m 600 "$SSH_KEY.pub" "$T/root/.ssh/authorized_keys"
  pack "$T" "$T/overlay.cpio.gz"
  cat "$CACHE/storage/base.cpio.gz" "$CACHE/host3/libvirt.cpio.gz" "$T/overlay.cpio.gz" > "$H3/initrd.gz.tmp"
  mv "$H3/initrd.gz.tmp" "$H3/initrd.gz"
  rm -rf "$T"
}

host3_xml() {
  cat <<X
<domain type='qemu'>
  <name>$(domain_of "$HOST3")</name>
  <title>Comet testbed compute host $HOST3 with local ZFS ($HOST3_ADDR)</title>
  <memory unit='MiB'>$HOST3_MEMORY_MIB</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$CACHE/guest/vmlinuz</kernel>
    <initrd>$H3/initrd.gz</initrd>
    <cmdline>console=tty0 console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <features><acpi/><tcg><tb-cache unit='MiB'>$HOST3_TB_CACHE_MIB</tb-cache></tcg></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback'/>
      <source file='$H3/zpool-disk.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='$HOST3_MAC'/>
      <source bridge='$BRIDGE'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='$H3/console.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
X
}

up_host3() {
  local d; d=$(domain_of "$HOST3")
  mkdir -p "$H3"
  if [ "$(domain_state "$d")" = running ]; then
    log "$d already running"
    record domain "$d"
  else
    [ -f "$CACHE/storage/base.cpio.gz" ] || build_storage_base
    build_host3_base
    build_host3_initrd
    [ -f "$H3/zpool-disk.qcow2" ] || qemu-img create -q -f qcow2 "$H3/zpool-disk.qcow2" "$HOST3_DISK_SIZE"
    host3_xml > "$H3/domain.xml"
    if [ -n "$(domain_state "$d")" ]; then
      log "$d is defined but not running (left by an earlier stack): undefining it"
      vsh undefine "$d" >/dev/null 2>&1 || true
    fi
    vsh define "$H3/domain.xml" >/dev/null
    record domain "$d"
    vsh start "$d" >/dev/null
    log "started $d ($HOST3_ADDR)"
  fi
  wait_host3
}

wait_host3() {
  local t0; t0=$(date +%s)
  while :; do
    if ssh3 "zfs list -H -o name $LOCAL_DATASET && virsh -q -c qemu:///system version" >/dev/null 2>&1 &&
       virsh -q -c "$(h3uri)" version >/dev/null 2>&1; then
      log "$HOST3 ready after $(( $(date +%s) - t0 )) s: $(ssh3 "zfs list -H -o name,avail $LOCAL_DATASET" | tr '\t' ' ')"
      return 0
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$SSH_WAIT_SECONDS" ]; then
      tail -n 20 "$H3/console.log" >&2 || true
      die "$HOST3 did not answer (ssh, zfs, libvirt) within $SSH_WAIT_SECONDS s"
    fi
    [ "$(domain_state "$(domain_of "$HOST3")")" = running ] || {
      tail -n 20 "$H3/console.log" >&2 || true; die "$(domain_of "$HOST3") is not running"; }
    sleep 1
  done
}

status_host3() {
  local d; d=$(domain_state "$(domain_of "$HOST3")")
  if [ "$d" != running ]; then echo "$HOST3 ($(domain_of "$HOST3"), $HOST3_ADDR): ${d:-not defined}"; return 1; fi
  local out
  if out=$(ssh3 "zfs list -H -o name,avail $LOCAL_DATASET" 2>&1) &&
     virsh -q -c "$(h3uri)" version >/dev/null 2>&1; then
    echo "$HOST3 ($(domain_of "$HOST3"), $HOST3_ADDR): running, local dataset $(echo "$out" | tr '\t' ' '), libvirt answers"
  else
    echo "$HOST3 ($(domain_of "$HOST3"), $HOST3_ADDR): running, but ssh/zfs/libvirt FAILED: $out"; return 1
  fi
}
