#!/usr/bin/env bash
# The MSAL interop tests (crates/idweb-cli/tests/msal.rs) run MSAL Python in
# a virtual environment at .test-deps/venv, with the packages pinned in
# interop/msal/requirements.txt. Needs python3 (3.9 or later) with its venv
# module. Idempotent: pip runs only when the requirements (or the
# interpreter) changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=.test-deps/venv
requirements=interop/msal/requirements.txt
stamp=$venv/.requirements.sha256
python=python3

python_ok() {
    command -v "$python" >/dev/null 2>&1 &&
        "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null &&
        "$python" -c 'import venv, ensurepip' 2>/dev/null
}

if ! python_ok; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing python3 and python3-venv (Debian packages)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
        hash -r
    fi
    if ! python_ok; then
        echo "error: the MSAL interop tests need python3 (3.9 or later) with its venv module" >&2
        echo "       (Debian: apt-get install python3 python3-venv; elsewhere your Python's venv/ensurepip)" >&2
        exit 1
    fi
fi

# A virtual environment whose interpreter is gone (Python upgraded or
# removed) is made anew.
if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "setup: $venv is broken; making it anew"
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: making $venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi

want=$( { sha256sum "$requirements"; "$venv/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing $requirements into $venv"
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        --require-virtualenv -r "$requirements"
    "$venv/bin/python" -c 'import msal; assert msal.__version__ == "1.39.0", msal.__version__'
    echo "$want" >"$stamp"
fi
