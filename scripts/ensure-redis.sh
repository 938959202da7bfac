#!/bin/sh
# Cluster mode's tests start their own redis-server on a free port (test/helpers/redis.ts) and
# never touch a Redis the machine already runs. Installs Debian's redis-server when it is
# missing, so that `npm test` works on a clean machine; does nothing when it is there.
# REDIS_SERVER_PATH names another binary to use instead (then nothing is installed).
set -eu
bin="${REDIS_SERVER_PATH:-$(command -v redis-server || echo /usr/bin/redis-server)}"
[ -x "$bin" ] && exit 0
if [ -n "${REDIS_SERVER_PATH:-}" ]; then
  echo "ensure-redis: REDIS_SERVER_PATH=$bin is not an executable" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-redis: redis-server is missing and there is no apt-get; install Redis 6.2 or later, or set REDIS_SERVER_PATH" >&2
  exit 1
fi
sudo=''
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo='sudo'; else
    echo "ensure-redis: redis-server is missing; install it as root: apt-get install -y redis-server" >&2
    exit 1
  fi
fi
echo "ensure-redis: installing Debian's redis-server for the cluster tests" >&2
export DEBIAN_FRONTEND=noninteractive
# Only the binary is needed: the tests start private instances on free ports.
if ! $sudo apt-get install -y -q --no-install-recommends redis-server >&2; then
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q --no-install-recommends redis-server >&2
fi
command -v redis-server >/dev/null 2>&1 || { echo "ensure-redis: redis-server installed but not on PATH" >&2; exit 1; }
