#!/usr/bin/env bash
# The browser tests drive Debian's chromium (Playwright cannot download its own browser here).
# Install it when it is missing and we are allowed to; otherwise say so and let the tests skip.
set -u
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing chromium for the browser tests…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    && exit 0
fi
echo "WARNING: /usr/bin/chromium is missing and could not be installed: the browser tests will be skipped." >&2
exit 0
