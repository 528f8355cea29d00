#!/usr/bin/env bash
# Ensure redis-server, redis-cli, redis-sentinel and redis-benchmark are on PATH (Debian/Ubuntu packages).
# Idempotent: exits 0 silently when everything is already installed. Never leaves the redis services running:
# tests start their own redis-server processes on free ports.
set -euo pipefail

BINS=(redis-server redis-cli redis-sentinel redis-benchmark)

have_all() {
  local b
  for b in "${BINS[@]}"; do
    command -v "$b" >/dev/null 2>&1 || return 1
  done
}

if have_all; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-redis: redis binaries missing and apt-get not available; install redis (server, cli, sentinel, benchmark) manually" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-redis: not root and sudo not found; cannot install redis" >&2
    exit 1
  fi
fi

# Keep Debian's maintainer scripts from starting redis-server/redis-sentinel during the install:
# policy-rc.d exit 101 = "action forbidden". Docker images usually have one already; add a temporary one otherwise.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=0
cleanup() {
  if [ "$ADDED_POLICY" = 1 ]; then
    "${SUDO[@]}" rm -f "$POLICY"
  fi
}
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  ADDED_POLICY=1
fi

echo "install-redis: installing redis-server redis-tools redis-sentinel" >&2
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends redis-server redis-tools redis-sentinel

# Belt and braces: if a service got started anyway (e.g. a real systemd host), stop and disable it.
for svc in redis-server redis-sentinel; do
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
  fi
done

if ! have_all; then
  for b in "${BINS[@]}"; do
    command -v "$b" >/dev/null 2>&1 || echo "install-redis: $b still missing after install" >&2
  done
  exit 1
fi

redis-server --version
