#!/usr/bin/env bash
# The UI tests (tests/ui) drive Debian's chromium through its own chromedriver: no browser is
# ever downloaded. Install both when we may (root on a Debian-like machine); otherwise say
# how, and the UI tests skip with that reason in the test summary. Never fails the install.
set -u

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if have; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing chromium and chromium-driver with apt-get (for tests/ui) ..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
    || echo "apt-get could not install chromium; tests/ui will be skipped" >&2
else
  cat >&2 <<MSG
tests/ui needs Debian's chromium and its chromedriver, not installed here:
  Debian/Ubuntu:  sudo apt-get install -y chromium chromium-driver
Until then the UI tests are skipped, with this reason in the test summary.
MSG
fi
exit 0
