#!/usr/bin/env bash
# Installs the Debian packages iiot-splitfed's tests and demo start as real
# processes: Mosquitto (MQTT broker), etcd (consortium ordering), socat (serial
# pty pairs), and systemd-analyze (the tests verify the shipped units). Idempotent: does nothing when they are present. Needs root (or
# sudo) only when something is missing.
set -euo pipefail
declare -A need=([mosquitto]=mosquitto [etcd]=etcd-server [etcdctl]=etcd-client [socat]=socat
                 [systemd-analyze]=systemd)
missing=()
for cmd in "${!need[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${need[$cmd]}")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "error: missing ${missing[*]} and not root; install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts a system-wide broker on :1883 after install; ours use their own ports and configs.
