#!/bin/sh
# The event tests start their own nats-server and rabbitmq-server on free ports
# (test/helpers/brokers.ts) and never touch brokers the machine already runs. Installs Debian's
# packages when a binary is missing, so that `npm test` works on a clean machine; does nothing
# when both are there.
set -eu
missing=''
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing="$missing nats-server"
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing="$missing rabbitmq-server"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-brokers: missing:$missing, and there is no apt-get; install them" >&2
  exit 1
fi
sudo=''
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo='sudo'; else
    echo "ensure-brokers: missing:$missing; install them as root: apt-get install -y$missing" >&2
    exit 1
  fi
fi
echo "ensure-brokers: installing Debian's$missing for the event tests" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
if ! $sudo apt-get install -y -q --no-install-recommends $missing >&2; then
  $sudo apt-get update -q >&2
  # shellcheck disable=SC2086
  $sudo apt-get install -y -q --no-install-recommends $missing >&2
fi
