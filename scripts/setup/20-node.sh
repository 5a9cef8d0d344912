#!/usr/bin/env bash
# The interoperability tests (crates/idweb-interop) run npm `oidc-provider`
# as an independent OpenID Provider: they need Node.js 20 or later, npm, and
# the pinned packages of interop/oidc-provider (installed from its lock file).
set -euo pipefail
cd "$(dirname "$0")/../.."

node_major() {
    node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "error: the tests need Node.js (20 or later) and npm (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
fi
major="$(node_major)"
if [ "$major" -lt 20 ]; then
    echo "error: the tests need Node.js 20 or later; found $(node --version)" >&2
    exit 1
fi

dir=interop/oidc-provider
if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
    touch "$dir/node_modules"
fi
