#!/usr/bin/env bash
# The browser end-to-end test (apps/demo/tests/browser.rs) drives a headless
# Chromium through chromedriver, both from Debian's packages: it needs
# /usr/bin/chromium and /usr/bin/chromedriver (and a font for readable
# screenshots). Idempotent.
set -euo pipefail

missing() {
    [ -x /usr/bin/chromium ] || return 0
    [ -x /usr/bin/chromedriver ] || return 0
    return 1
}

if missing; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium chromium-driver fonts-dejavu-core >/dev/null
    else
        echo "error: the browser tests need Debian's chromium and chromium-driver" \
            "(/usr/bin/chromium, /usr/bin/chromedriver): run as root" \
            "'apt-get install chromium chromium-driver'" >&2
        exit 1
    fi
fi
if missing; then
    echo "error: chromium or chromedriver is still missing after installing chromium and chromium-driver" >&2
    exit 1
fi
if ! version=$(/usr/bin/chromedriver --version 2>&1); then
    echo "error: chromedriver does not run: $version" >&2
    exit 1
fi
echo "chromedriver: $version"
