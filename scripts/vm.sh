#!/usr/bin/env bash
# A Debian 12 (bookworm) VM for running the whole town in, made from Debian packages only.
#
#   scripts/vm.sh build  [DIR]          make the VM disk, kernel and keys in DIR (root; skipped when up to date)
#   scripts/vm.sh up     [DIR]          boot it in the background; wait until SSH answers
#   scripts/vm.sh ssh    [DIR] [CMD...] ssh in as root (runs CMD if given)
#   scripts/vm.sh push   [DIR]          copy this checkout's tracked files (working-tree state) to /root/gastown_mcp
#   scripts/vm.sh tunnel [DIR]          forward the town's MCP and gateway ports to this machine (Ctrl-C ends it)
#   scripts/vm.sh status [DIR]          say whether it is running
#   scripts/vm.sh down   [DIR]          power it off cleanly
#
# DIR defaults to .cache/vm in the checkout. For `ssh`, the first argument is taken as DIR only when it is an
# existing directory; put `--` before a command to be explicit. CMD runs in the guest's shell, as with ssh.
#
# Settings (environment):
#   VM_CPUS=2  VM_MEMORY=6G  VM_DISK_SIZE=20G  VM_SSH_PORT=2222
#   VM_SNAPSHOT=1     boot with qemu's -snapshot: the guest's writes are thrown away at power-off
#   VM_ACCEL=auto     KVM when it can run Debian's kernel, else CPU emulation (TCG) with a warning;
#                     kvm insists on KVM, tcg always emulates
#   VM_BOOT_TIMEOUT=180  seconds `up` waits for SSH
#   VM_TUNNEL_PORTS="8765 8766"  ports `tunnel` forwards (same number on both ends)
#   VM_MIRROR=http://deb.debian.org/debian  VM_SECURITY_MIRROR=http://deb.debian.org/debian-security
#   VM_REBUILD=1      rebuild even when the disk is up to date (replaces the guest's disk and all in it)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$REPO/scripts/vm.sh"
DEFAULT_DIR="$REPO/.cache/vm"

CPUS=${VM_CPUS:-2}
MEMORY=${VM_MEMORY:-6G}
DISK_SIZE=${VM_DISK_SIZE:-20G}
SSH_PORT=${VM_SSH_PORT:-2222}
BOOT_TIMEOUT=${VM_BOOT_TIMEOUT:-180}
TUNNEL_PORTS=${VM_TUNNEL_PORTS:-8765 8766}
MIRROR=${VM_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
HOST_ALIAS=gastown-vm
GUEST_CHECKOUT=/root/gastown_mcp

HOST_PACKAGES=(qemu-system-x86 mmdebstrap e2fsprogs openssh-client)
GUEST_PACKAGES=(
  linux-image-amd64 systemd-sysv udev dbus kmod iproute2 procps e2fsprogs sudo apparmor
  openssh-server ca-certificates
  docker.io docker-compose iptables mmdebstrap
  git make python3 python3-venv
)

die() {
  echo "vm.sh: $*" >&2
  exit 1
}

log() { echo "vm.sh: $*"; }

usage() {
  sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d' | sed 's/^# \{0,1\}//'
}

need_root() {
  [ "$(id -u)" -eq 0 ] || die "$1 needs root (try: sudo bash scripts/vm.sh $1)"
}

# Files in DIR.
set_dir() {
  DIR=$(realpath -m "${1:-$DEFAULT_DIR}")
  DISK="$DIR/disk.img"
  KERNEL="$DIR/vmlinuz"
  INITRD="$DIR/initrd.img"
  KEY="$DIR/id_ed25519"
  HOST_KEY="$DIR/ssh_host_ed25519_key"
  KNOWN_HOSTS="$DIR/known_hosts"
  STAMP="$DIR/build.inputs"
  PIDFILE="$DIR/qemu.pid"
  CONSOLE="$DIR/console.log"
  PORTFILE="$DIR/ssh.port"
}

# ---------------------------------------------------------------------------------------------- build

install_host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
  log "installing on this machine: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What the disk is made from: the build steps of this script, its settings and the CA files copied into the
# guest. Editing other parts of the script (up, ssh, ...) does not rebuild the disk.
build_inputs() {
  {
    declare -f cmd_build configure_guest make_keys
    echo "${GUEST_PACKAGES[*]} $SUITE $MIRROR $SECURITY_MIRROR $DISK_SIZE"
    for crt in /usr/local/share/ca-certificates/*.crt; do
      if [ -f "$crt" ]; then echo "$(basename "$crt") $(sha256sum <"$crt" | cut -d' ' -f1)"; fi
    done
  } | sha256sum | cut -d' ' -f1
}

make_keys() {
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "root@$HOST_ALIAS-operator" -f "$KEY"
  [ -f "$HOST_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "$HOST_ALIAS" -f "$HOST_KEY"
  # The guest's host key is known in advance, so SSH can check it strictly without ever prompting.
  echo "$HOST_ALIAS $(cut -d' ' -f1,2 "$HOST_KEY.pub")" >"$KNOWN_HOSTS"
}

configure_guest() {
  local root=$1
  echo "$HOST_ALIAS" >"$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$HOST_ALIAS" \
    >"$root/etc/hosts"
  # qemu's user-mode network: DHCP hands out 10.0.2.15; 10.0.2.3 is its DNS forwarder.
  echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"
  echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$root/etc/fstab"
  mkdir -p "$root/etc/systemd/network"
  printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$root/etc/systemd/network/20-dhcp.network"

  # SSH: root by key only, with the host key made in DIR.
  rm -f "$root"/etc/ssh/ssh_host_*
  install -m 0600 "$HOST_KEY" "$root/etc/ssh/ssh_host_ed25519_key"
  install -m 0644 "$HOST_KEY.pub" "$root/etc/ssh/ssh_host_ed25519_key.pub"
  printf 'HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n' \
    >"$root/etc/ssh/sshd_config.d/gastown-vm.conf"
  install -d -m 0700 "$root/root/.ssh"
  install -m 0600 "$KEY.pub" "$root/root/.ssh/authorized_keys"

  # Outbound HTTPS from here may pass a TLS-intercepting proxy: trust the same extra CAs as this machine.
  local crt
  for crt in /usr/local/share/ca-certificates/*.crt; do
    if [ -f "$crt" ]; then install -m 0644 "$crt" "$root/usr/local/share/ca-certificates/"; fi
  done
  chroot "$root" update-ca-certificates >/dev/null 2>&1
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  # npm (if ever installed in the guest) and Python's ssl honour these too.
  printf 'NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt\nREQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt\n' \
    >>"$root/etc/environment"

  chroot "$root" systemctl enable --quiet systemd-networkd ssh docker
  # No serial login prompt is needed (root logs in over SSH), but keep the console for boot messages.
  chroot "$root" passwd --lock root >/dev/null
}

cmd_build() {
  need_root build
  local started=$SECONDS inputs
  install_host_packages
  mkdir -p "$DIR"
  inputs=$(build_inputs)
  if [ -z "${VM_REBUILD:-}" ] && [ -f "$DISK" ] && [ -f "$KERNEL" ] && [ -f "$INITRD" ] &&
    [ "$(cat "$STAMP" 2>/dev/null)" = "$inputs" ]; then
    log "VM disk in $DIR is up to date (built from the same inputs); VM_REBUILD=1 rebuilds it"
    return 0
  fi
  if vm_running; then
    die "the VM from $DIR is running; stop it first (scripts/vm.sh down $DIR), then build again"
  fi
  make_keys
  local root="$DIR/root"
  rm -rf "$root" "$DISK.new"
  log "creating the guest root with mmdebstrap ($SUITE, ${#GUEST_PACKAGES[@]} packages and their dependencies)"
  local list
  list=$(
    IFS=,
    echo "${GUEST_PACKAGES[*]}"
  )
  mmdebstrap --variant=apt --quiet --include="$list" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "$root" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main" \
    </dev/null
  log "guest root made in $((SECONDS - started)) s; configuring it"
  configure_guest "$root"
  cp -L "$root/vmlinuz" "$KERNEL.new"
  cp -L "$root/initrd.img" "$INITRD.new"
  log "making a $DISK_SIZE ext4 disk (sparse) from the guest root"
  mke2fs -q -t ext4 -L gastown-root -E root_owner=0:0 -d "$root" "$DISK.new" "$DISK_SIZE" >/dev/null
  mv "$DISK.new" "$DISK"
  mv "$KERNEL.new" "$KERNEL"
  mv "$INITRD.new" "$INITRD"
  rm -rf "$root"
  echo "$inputs" >"$STAMP"
  log "built $DISK ($(du -h "$DISK" | cut -f1) used of $DISK_SIZE) in $((SECONDS - started)) s"
  log "next: scripts/vm.sh up${1:+ $1}"
}

# ---------------------------------------------------------------------------------------------- up / down

# The pid of this DIR's qemu, if it runs (a stale pidfile whose pid now belongs to something else is not it).
vm_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "file=$DISK," && echo "$pid"
}

vm_running() { vm_pid >/dev/null; }

port() { cat "$PORTFILE" 2>/dev/null || echo "$SSH_PORT"; }

ssh_base() {
  SSH=(ssh -i "$KEY" -p "$(port)" -o "UserKnownHostsFile=$KNOWN_HOSTS" -o StrictHostKeyChecking=yes
    -o "HostKeyAlias=$HOST_ALIAS" -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR
    -o ServerAliveInterval=15)
  DEST=root@127.0.0.1
}

kvm_usable() { [ -e /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }

# A PVM host (kvm_pvm loaded, no kvm_intel/kvm_amd) runs only guest kernels built for PVM; Debian's kernel
# hangs there right after its real-mode setup.
kvm_is_pvm_only() { [ -d /sys/module/kvm_pvm ] && [ ! -d /sys/module/kvm_intel ] && [ ! -d /sys/module/kvm_amd ]; }

# Sets ACCEL. VM_ACCEL=auto (default) uses KVM when it can run Debian's kernel and falls back to emulation
# (TCG) with a warning otherwise; VM_ACCEL=kvm insists on KVM; VM_ACCEL=tcg always emulates.
accel_args() {
  local why=""
  case "${VM_ACCEL:-auto}" in
  kvm)
    kvm_usable || die "/dev/kvm is missing or not usable by $(id -un): enable KVM (or nested virtualisation) on this machine, run as root, or set VM_ACCEL=tcg to emulate (much slower)"
    ;;
  tcg) why="VM_ACCEL=tcg" ;;
  auto)
    if ! [ -e /dev/kvm ]; then
      why="/dev/kvm does not exist"
    elif ! kvm_usable; then
      why="/dev/kvm is not usable by $(id -un) (run as root or join the kvm group)"
    elif kvm_is_pvm_only; then
      why="this machine's KVM is PVM (kvm_pvm), which runs only PVM-built guest kernels, not Debian's"
    fi
    ;;
  *) die "VM_ACCEL must be auto, kvm or tcg (got '${VM_ACCEL}')" ;;
  esac
  if [ -n "$why" ]; then
    echo "vm.sh: warning: $why; emulating the CPU (TCG): the VM works but runs many times slower than with KVM" >&2
    ACCEL=(-accel "tcg,thread=multi,tb-size=1024" -cpu max)
  else
    ACCEL=(-enable-kvm -cpu host)
  fi
}

console_tail() {
  echo "--- last lines of $CONSOLE:" >&2
  tail -n 25 "$CONSOLE" >&2 2>/dev/null || true
}

start_qemu() {
  local snapshot=()
  [ -n "${VM_SNAPSHOT:-}" ] && snapshot=(-snapshot)
  rm -f "$PIDFILE"
  qemu-system-x86_64 -name "$HOST_ALIAS" -machine q35 "$@" -smp "$CPUS" -m "$MEMORY" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "root=/dev/vda rw console=ttyS0" \
    -drive "file=$DISK,if=virtio,format=raw,discard=unmap,cache=writeback" "${snapshot[@]}" \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$SSH_PORT-:22" -device virtio-net-pci,netdev=net0 \
    -device virtio-rng-pci \
    -display none -monitor none -serial "file:$CONSOLE" \
    -daemonize -pidfile "$PIDFILE" 2>"$DIR/qemu.err"
}

cmd_up() {
  if ! [ -f "$DISK" ] || ! [ -f "$KERNEL" ]; then
    die "no VM disk in $DIR; make one first: sudo bash scripts/vm.sh build${1:+ $1}"
  fi
  if ! [ -r "$DISK" ] || ! [ -w "$DISK" ]; then
    die "$DISK is not writable by $(id -un) (run as root)"
  fi
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing: sudo bash scripts/vm.sh build"
  if vm_running; then
    log "already running (pid $(vm_pid), ssh port $(port))"
    return 0
  fi
  accel_args
  local started=$SECONDS
  if [ -n "${VM_SNAPSHOT:-}" ]; then log "VM_SNAPSHOT is set: the guest's writes are discarded at power-off"; fi
  : >"$CONSOLE"
  echo "$SSH_PORT" >"$PORTFILE"
  if ! start_qemu "${ACCEL[@]}" && [ "${ACCEL[*]}" = "-enable-kvm -cpu host" ] && grep -q "MSR 0x10a" "$DIR/qemu.err"; then
    # Nested KVM on some hosts cannot pass IA32_ARCH_CAPABILITIES through; the guest then assumes the CPU is
    # vulnerable and turns its own mitigations on, which is the safe side.
    log "this KVM cannot pass the arch-capabilities MSR to the guest; booting with -cpu host,-arch-capabilities"
    start_qemu -enable-kvm -cpu host,-arch-capabilities
  fi
  vm_running || {
    cat "$DIR/qemu.err" >&2
    die "qemu did not start (is port $SSH_PORT taken? then set VM_SSH_PORT); see its message above"
  }
  log "booting (pid $(cat "$PIDFILE"), $CPUS CPUs, $MEMORY memory, console log $CONSOLE); waiting for SSH on 127.0.0.1:$SSH_PORT"
  ssh_base
  while ! "${SSH[@]}" -o ConnectTimeout=3 "$DEST" true 2>/dev/null; do
    if ! vm_running; then
      console_tail
      die "the VM exited while booting; see the console log above"
    fi
    if ((SECONDS - started > BOOT_TIMEOUT)); then
      console_tail
      if ! [ -s "$CONSOLE" ]; then
        echo "vm.sh: the console log is empty: the kernel never started; if KVM is forced, try VM_ACCEL=tcg" >&2
      fi
      die "no SSH answer within $BOOT_TIMEOUT s (the VM is still running: scripts/vm.sh down${1:+ $1} stops it)"
    fi
    sleep 1
  done
  log "up in $((SECONDS - started)) s; next: scripts/vm.sh push${1:+ $1}, then scripts/vm.sh ssh${1:+ $1}"
}

cmd_down() {
  local pid started=$SECONDS
  if ! pid=$(vm_pid); then
    log "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  ssh_base
  "${SSH[@]}" -o ConnectTimeout=5 "$DEST" 'systemctl poweroff' >/dev/null 2>&1 || true
  while kill -0 "$pid" 2>/dev/null && ((SECONDS - started < 60)); do
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "no clean power-off within 60 s; stopping qemu (pid $pid)"
    kill "$pid" 2>/dev/null || true
    sleep 2
    kill -9 "$pid" 2>/dev/null || true
  else
    log "powered off in $((SECONDS - started)) s"
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  if vm_running; then
    log "running (pid $(vm_pid), ssh port $(port), dir $DIR)"
  else
    log "not running (dir $DIR)"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------- ssh / push / tunnel

need_running() {
  vm_running || die "the VM from $DIR is not running: scripts/vm.sh up${1:+ $1}"
}

cmd_ssh() {
  need_running
  ssh_base
  exec "${SSH[@]}" "$DEST" "$@"
}

# NUL-separated paths in, the ones that exist in the working tree out.
existing_files() {
  local f
  while IFS= read -r -d '' f; do
    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
  done
}

cmd_push() {
  need_running "${1:-}"
  git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$REPO is not a git checkout"
  local started=$SECONDS count
  count=$(git -C "$REPO" ls-files | wc -l)
  ssh_base
  # Tracked files in their working-tree state (deleted-but-tracked files are skipped).
  (cd "$REPO" && git ls-files -z | existing_files | tar --null -T - -c) |
    "${SSH[@]}" "$DEST" "mkdir -p $GUEST_CHECKOUT && tar -x -C $GUEST_CHECKOUT"
  log "pushed $count tracked files to $GUEST_CHECKOUT in $((SECONDS - started)) s"
}

cmd_tunnel() {
  need_running "${1:-}"
  ssh_base
  local forwards=() p
  for p in $TUNNEL_PORTS; do
    forwards+=(-L "127.0.0.1:$p:127.0.0.1:$p")
  done
  log "forwarding 127.0.0.1:{${TUNNEL_PORTS// /,}} here to the same ports in the VM (Ctrl-C ends it)"
  exec "${SSH[@]}" -N -o ExitOnForwardFailure=yes "${forwards[@]}" "$DEST"
}

# ---------------------------------------------------------------------------------------------- main

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case "$cmd" in
  build | up | down | push | tunnel | status)
    [ $# -le 1 ] || die "$cmd takes at most one argument (DIR); see: scripts/vm.sh help"
    set_dir "${1:-}"
    "cmd_$cmd" "${1:-}"
    ;;
  ssh)
    if [ $# -gt 0 ] && [ "$1" != -- ] && [ -d "$1" ]; then
      set_dir "$1"
      shift
    else
      set_dir ""
    fi
    [ "${1:-}" = -- ] && shift
    cmd_ssh "$@"
    ;;
  help | -h | --help)
    usage
    ;;
  *)
    usage >&2
    die "unknown command '${cmd}'"
    ;;
  esac
}

main "$@"
