#!/bin/sh
# The alert rules' unit tests (deploy/prometheus/) run `promtool test rules`. Uses promtool from
# PATH or PROMTOOL_PATH; otherwise takes it from Debian's prometheus package, unpacked (not
# installed: no Prometheus server is started) into node_modules/.cache/promtool.
set -eu
if [ -n "${PROMTOOL_PATH:-}" ]; then
  [ -x "$PROMTOOL_PATH" ] && exit 0
  echo "ensure-promtool: PROMTOOL_PATH=$PROMTOOL_PATH is not an executable" >&2
  exit 1
fi
command -v promtool >/dev/null 2>&1 && exit 0
dir="node_modules/.cache/promtool"
[ -x "$dir/usr/bin/promtool" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "ensure-promtool: promtool is missing and there is no apt-get/dpkg-deb; install Prometheus's promtool, or set PROMTOOL_PATH" >&2
  exit 1
fi
echo "ensure-promtool: unpacking promtool from Debian's prometheus package for the alert rules' tests" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -q prometheus >&2); then
  sudo=''
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo='sudo'; fi
  $sudo apt-get update -q >&2
  (cd "$tmp" && apt-get download -q prometheus >&2)
fi
mkdir -p "$dir"
dpkg-deb -x "$tmp"/prometheus_*.deb "$dir"
[ -x "$dir/usr/bin/promtool" ] || { echo "ensure-promtool: the package held no promtool" >&2; exit 1; }
