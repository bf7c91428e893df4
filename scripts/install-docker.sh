#!/usr/bin/env bash
# Install and start the Docker engine (plus compose, mmdebstrap, iptables, AppArmor where on) on Debian.
# Run as root. Safe to run again: it skips what is installed and leaves a running daemon alone.
# The daemon log goes to ${DOCKERD_LOG:-/var/log/dockerd.log}.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-docker.sh must run as root (try: sudo bash scripts/install-docker.sh)" >&2
  exit 1
fi

log=${DOCKERD_LOG:-/var/log/dockerd.log}
packages=(mmdebstrap iptables iproute2 git ca-certificates btrfs-progs)
# An engine from Docker's own packages (docker-ce) stays; Debian's docker.io would conflict with it.
command -v dockerd >/dev/null || packages+=(docker.io)
docker compose version >/dev/null 2>&1 || packages+=(docker-compose)
# With AppArmor on in the kernel, Docker refuses to start any container unless it can load its profile,
# which needs apparmor_parser. Minimal Debian (a fresh VM) enables AppArmor but lacks the package.
if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = "Y" ]; then
  packages+=(apparmor)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "packages already installed: ${packages[*]}"
fi

if docker info >/dev/null 2>&1; then
  echo "docker engine already running"
  exit 0
fi

if ! pgrep -x dockerd >/dev/null; then
  echo "starting dockerd (log: $log)"
  # setsid detaches it from this shell so it outlives the script (CI step, interactive shell).
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "docker engine is up: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 1
done
echo "dockerd did not come up within 60 s; last lines of $log:" >&2
tail -n 30 "$log" >&2 || true
exit 1
