#!/usr/bin/env bash
# The browser tests drive Debian's chromium (Playwright cannot download its own browser here).
# Install it (with a CJK font, so 简体中文 screenshots are legible) when missing and we are allowed
# to; otherwise say so and let the tests skip.
set -u
[ -x /usr/bin/chromium ] && [ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing chromium for the browser tests…"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei) >/dev/null 2>&1 \
    && exit 0
fi
[ -x /usr/bin/chromium ] && exit 0  # the font is a nicety; the tests only need the browser
echo "WARNING: /usr/bin/chromium is missing and could not be installed: the browser tests will be skipped." >&2
exit 0
