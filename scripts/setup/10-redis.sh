#!/usr/bin/env bash
# The Redis tests use the Redis server at 127.0.0.1:6379 (running on every
# machine of this project) and start private redis-server processes of their
# own for restart tests: both must be there.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
    else
        echo "error: the tests need redis-server and redis-cli (Debian: apt-get install redis-server redis-tools)" >&2
        exit 1
    fi
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "error: no Redis answers at 127.0.0.1:6379; start one (redis-server --daemonize yes --port 6379)" >&2
    exit 1
fi
