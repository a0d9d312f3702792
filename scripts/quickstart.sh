#!/usr/bin/env bash
# Install the host, the plugin API and the three example plugins into ./.venv,
# sign the example plugins with a key made here, trust that key, list the plugins
# under the default `strict` trust mode, then run `aperio serve` in the foreground
# (Ctrl-C stops it). Safe to run again. Everything it writes stays in this checkout
# (.venv and .demo); nothing goes to ~/.aperio.
#
# --no-serve (or APERIO_QUICKSTART_NO_SERVE=1) stops after installing: CI uses it.
set -euo pipefail
cd "$(dirname "$0")/.."

serve=1
for arg in "$@"; do
    case "$arg" in
        --no-serve) serve=0 ;;
        *) echo "usage: $0 [--no-serve]" >&2; exit 2 ;;
    esac
done
if [[ "${APERIO_QUICKSTART_NO_SERVE:-0}" == "1" ]]; then
    serve=0
fi

started=$SECONDS
step() { printf '==> [%s/6] %s (%ss)\n' "$1" "$2" "$((SECONDS - started))"; }

python="${PYTHON:-python3}"
pip_quiet=(--quiet --disable-pip-version-check)
step 1 "creating .venv and installing the host, the plugin API, the server and their dependencies (about 30 s)"
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install "${pip_quiet[@]}" --upgrade pip
.venv/bin/python -m pip install "${pip_quiet[@]}" -e './hookspecs[http]' -e '.[dev,server,postgres]'

step 2 "checking for docker-registry, bubblewrap, chromium and postgresql (used by some tests)"
# The OCI tests start a real registry on 127.0.0.1: Debian's docker-registry.
if ! command -v docker-registry >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-registry >/dev/null; } \
            || echo "note: could not install docker-registry; the OCI tests will be skipped"
    else
        echo "note: docker-registry is not installed (apt-get install docker-registry); the OCI tests will be skipped"
    fi
fi

# Workers run in a bubblewrap sandbox (their own PID namespace and /proc, read-only
# filesystem); without it they fall back to a weaker containment and the sandbox tests skip.
if ! command -v bwrap >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; } \
            || echo "note: could not install bubblewrap; workers fall back to subreaper containment"
    else
        echo "note: bubblewrap is not installed (apt-get install bubblewrap); workers fall back to subreaper containment"
    fi
fi

# The console's browser tests drive Debian's Chromium with Playwright (never a browser download).
if ! command -v chromium >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
            || echo "note: could not install chromium; the console's browser tests will be skipped"
    else
        echo "note: chromium is not installed (apt-get install chromium); the console's browser tests will be skipped"
    fi
fi

# The state-store tests start a real PostgreSQL on 127.0.0.1 (initdb and pg_ctl from Debian's server
# package; nothing is left running); a fleet of hosts shares one through APERIO_STATE_URL.
if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && ! command -v pg_ctl >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } \
            || echo "note: could not install postgresql; the PostgreSQL state-store tests will be skipped"
    else
        echo "note: PostgreSQL is not installed (apt-get install postgresql); its state-store tests will be skipped"
    fi
fi

# The demo's own signing key and trust store, kept inside the checkout so that
# nothing in ~/.aperio changes. An operator would drop the author's public key
# into APERIO_PLUGIN_TRUSTED_KEYS_DIR instead.
step 3 "making a demo signing key and trust store in .demo/"
demo=.demo
mkdir -p "$demo/keys" "$demo/dist"
mkdir -p -m 0700 "$demo/trusted-keys"
if [[ ! -f "$demo/keys/demo-author.pem" ]]; then
    .venv/bin/aperio plugin keygen demo-author --out "$demo/keys"
fi
cp "$demo/keys/demo-author.pub.pem" "$demo/trusted-keys/"

# Build each example plugin into a wheel with its own build backend, sign it,
# and install it like any published plugin.
step 4 "building the three example plugins with their own build backend"
rm -f "$demo"/dist/*.whl
.venv/bin/python -m pip wheel "${pip_quiet[@]}" --no-deps -w "$demo/dist" \
    ./example_plugins/box-connector ./example_plugins/box-remediation ./example_plugins/splunk-hec
step 5 "checking and signing them, installing them like published plugins"
for wheel in "$demo"/dist/*.whl; do
    .venv/bin/aperio plugin sign "$wheel" --key "$demo/keys/demo-author.pem"
done
.venv/bin/python -m pip install "${pip_quiet[@]}" --no-deps --force-reinstall "$demo"/dist/*.whl

export APERIO_PLUGIN_TRUST_MODE=strict
export APERIO_PLUGIN_TRUSTED_KEYS_DIR="$PWD/$demo/trusted-keys"
# The host's state (enable flags, KV, discovery cache) and plugins directory stay in .demo too.
export APERIO_STATE_DIR="$PWD/$demo/state"
export APERIO_PLUGINS_DIR="$PWD/$demo/plugins"
step 6 "listing the plugins under the strict trust mode"
.venv/bin/aperio plugin list
echo
echo "done in $((SECONDS - started)) s. To use this demo host in your shell:"
echo "  export APERIO_PLUGIN_TRUSTED_KEYS_DIR=$APERIO_PLUGIN_TRUSTED_KEYS_DIR"
echo "  export APERIO_STATE_DIR=$APERIO_STATE_DIR APERIO_PLUGINS_DIR=$APERIO_PLUGINS_DIR"
if [[ $serve -eq 1 ]]; then
    echo
    echo "==> starting the host as a service: .venv/bin/aperio serve (Ctrl-C stops it; --no-serve skips this)"
    exec .venv/bin/aperio serve
fi
