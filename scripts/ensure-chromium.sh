#!/bin/sh
# The console's browser tests drive Debian's Chromium (test/console/). Installs it when it is
# missing, so that `npm test` works on a clean machine; does nothing when it is there.
# CHROMIUM_PATH names another binary to use instead (then nothing is installed).
set -eu
bin="${CHROMIUM_PATH:-/usr/bin/chromium}"
[ -x "$bin" ] && exit 0
if [ -n "${CHROMIUM_PATH:-}" ]; then
  echo "ensure-chromium: CHROMIUM_PATH=$bin is not an executable" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: $bin is missing and there is no apt-get; install Chromium, or set CHROMIUM_PATH" >&2
  exit 1
fi
sudo=''
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo='sudo'; else
    echo "ensure-chromium: $bin is missing; install it as root: apt-get install -y chromium" >&2
    exit 1
  fi
fi
echo "ensure-chromium: installing Debian's chromium for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet: update first if the package is unknown.
if ! $sudo apt-get install -y -q chromium >&2; then
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q chromium >&2
fi
[ -x "$bin" ] || { echo "ensure-chromium: chromium installed but $bin is not there" >&2; exit 1; }
