#!/usr/bin/env bash
# Makes sure the browser tests' Chromium is on this machine: Debian's `chromium` package, from the
# distribution's package registry (never a browser download by a test tool). Called by the README's
# test command and so by .ci/run. Exits non-zero with one line when it cannot install it, so the test
# command fails loudly instead of the browser tests being skipped.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "tests need /usr/bin/chromium (Debian package 'chromium'); install it with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "tests need /usr/bin/chromium: run 'apt-get install chromium' as root" >&2
    exit 1
  fi
fi
echo "installing Debian's chromium for the browser tests (apt-get, about a minute)" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
[ -x /usr/bin/chromium ] || { echo "apt-get installed chromium but /usr/bin/chromium is missing" >&2; exit 1; }
