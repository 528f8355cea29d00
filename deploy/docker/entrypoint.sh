#!/bin/sh
# psync-relay's Docker entrypoint. The RESP port must be reachable from other containers, so the relay binds
# 0.0.0.0 -- but only with a password: a relay without authentication would hand any client on the network the
# whole dataset (a full sync). Give the password as PSYNC_RELAY_PASSWORD_FILE (a mounted secret; preferred: a
# plain variable shows in `docker inspect`) or PSYNC_RELAY_PASSWORD; replicas then set masterauth.
# An explicit --bind in the arguments is the caller's choice and is passed through (e.g. a config with
# listen.users, or --bind 127.0.0.1 for a sidecar); the relay's own checks still apply.
set -eu

app=$(CDPATH='' cd -- "$(dirname -- "$0")/../.." && pwd)
config=${PSYNC_RELAY_CONFIG:-$app/config/relay.yaml}

for arg in "$@"; do
  case $arg in
    -h | --help | -v | --version | --bind | --bind=*) exec node "$app/dist/main.js" --config "$config" "$@" ;;
  esac
done

if [ -n "${PSYNC_RELAY_PASSWORD:-}" ] || [ -n "${PSYNC_RELAY_PASSWORD_FILE:-}" ]; then
  exec node "$app/dist/main.js" --config "$config" --bind 0.0.0.0 "$@"
fi

cat >&2 <<'MSG'
psync-relay: refusing to listen on 0.0.0.0 without a password.
  Mount a secret and set PSYNC_RELAY_PASSWORD_FILE=/run/secrets/<name> (or set PSYNC_RELAY_PASSWORD);
  replicas then connect with masterauth <password>.
  To choose the address yourself, pass --bind (e.g. --bind 127.0.0.1).
MSG
exit 2
