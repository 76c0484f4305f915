#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (never a downloaded browser build) with a CJK font so that
# Chinese renders. Installs `chromium chromium-driver fonts-noto-cjk` when missing and we are root;
# otherwise says loudly what is missing (the browser tests then fail in CI and skip, loudly, locally).
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ! -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] \
   && ! fc-list 2>/dev/null | grep -qi "Noto Sans CJK"; then need+=(fonts-noto-cjk); fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-browser: missing ${need[*]} and cannot install (need root and apt-get);" \
       "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 0
fi
echo "ensure-browser: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
