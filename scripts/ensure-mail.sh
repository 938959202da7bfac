#!/bin/sh
# The email bridge tests start their own dovecot IMAP server on a free port, from a config file in
# a temp directory (test/helpers/mail-servers.ts), and never touch the machine's own mail setup or
# /etc/dovecot. Installs Debian's dovecot-imapd when the binary is missing, so that `npm test`
# works on a clean machine; does nothing when it is there.
set -eu
command -v dovecot >/dev/null 2>&1 && exit 0
[ -x /usr/sbin/dovecot ] && exit 0
missing='dovecot-imapd'
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-mail: missing: dovecot (Debian's $missing), and there is no apt-get; install it" >&2
  exit 1
fi
sudo=''
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo='sudo'; else
    echo "ensure-mail: missing: dovecot; install it as root: apt-get install -y $missing" >&2
    exit 1
  fi
fi
echo "ensure-mail: installing Debian's $missing for the email bridge tests" >&2
export DEBIAN_FRONTEND=noninteractive
# The package starts the system's own dovecot on the standard ports; the tests do not use it.
if ! $sudo apt-get install -y -q --no-install-recommends $missing >&2; then
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q --no-install-recommends $missing >&2
fi
