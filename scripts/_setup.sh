# Shared by scripts/dev and scripts/test: makes .venv and installs the locked dependencies.
# Sourced, not run; the caller has cd'ed to the repository root and set SCRIPT_NAME.
# shellcheck shell=bash

log() { printf '%s: %s\n' "${SCRIPT_NAME:-scripts}" "$*" >&2; }

is_root() { [ "$(id -u)" -eq 0 ]; }

APT_UPDATED=0
apt_install() {
    # apt_install PKG... ; returns non-zero (without aborting the script) on failure.
    command -v apt-get >/dev/null 2>&1 || { log "apt-get not available; cannot install: $*"; return 1; }
    export DEBIAN_FRONTEND=noninteractive
    local out
    out="$(mktemp)"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        if ! apt-get update -q >"$out" 2>&1; then
            cat "$out" >&2; rm -f "$out"; log "apt-get update failed"; return 1
        fi
        APT_UPDATED=1
    fi
    log "apt-get install -y $* (this can take a while)"
    if ! apt-get install -y -q --no-install-recommends "$@" >"$out" 2>&1; then
        tail -n 30 "$out" >&2; rm -f "$out"; log "apt-get install $* failed"; return 1
    fi
    rm -f "$out"
}

# ---------------------------------------------------------------- python + venv
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    command -v "$PYTHON" >/dev/null 2>&1 || { log "$PYTHON not found; install Python 3.11+ (apt-get install python3)"; exit 1; }
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { log "Python 3.11+ required, found $("$PYTHON" --version 2>&1)"; exit 1; }
    log "creating .venv"
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        if is_root; then
            pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            apt_install python3-venv "python${pyver}-venv" || apt_install python3-venv || true
        fi
        "$PYTHON" -m venv .venv || {
            log "could not create a venv: install the venv module (apt-get install python3-venv)"
            exit 1
        }
    fi
fi

# ---------------------------------------------------------------- dependencies
if [ ! -x .venv/bin/uv ]; then
    log "installing uv into .venv"
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        .venv/bin/python -m ensurepip --upgrade >/dev/null 2>&1 || true
    fi
    .venv/bin/python -m pip install -q --disable-pip-version-check uv >&2
fi
uv_pip() { .venv/bin/uv pip "$1" --python .venv/bin/python "${@:2}"; }  # only ever this venv

# What is installed, and from which lock, is kept in a stamp: `run:<hash>` after scripts/dev (what
# running needs: requirements.lock), `test:<hash>` after scripts/test (requirements-dev.lock: the same
# plus the test toolchain, Playwright and mypy among it). The caller sets SETUP_FOR=run or test.
# Installing for running adds to the venv and removes nothing, so scripts/dev never takes the test
# toolchain away from a venv that scripts/test set up; scripts/test makes the venv exactly its lock.
deps_key() { printf '%s:%s' "$1" "$(cat "$2" pyproject.toml | sha256sum | cut -d' ' -f1)"; }
run_key="$(deps_key run requirements.lock)"
test_key="$(deps_key test requirements-dev.lock)"
stamp=.venv/.switchboard-deps
installed="$(cat "$stamp" 2>/dev/null || true)"
case "${SETUP_FOR:?set SETUP_FOR=run or SETUP_FOR=test before sourcing scripts/_setup.sh}" in
    run) lock=requirements.lock; wanted="$run_key"; enough=("$run_key" "$test_key") ;;
    test) lock=requirements-dev.lock; wanted="$test_key"; enough=("$test_key") ;;
    *) log "SETUP_FOR must be run or test, not $SETUP_FOR"; exit 1 ;;
esac
up_to_date=0
for key in "${enough[@]}"; do
    if [ "$installed" = "$key" ]; then up_to_date=1; fi
done
if [ "$up_to_date" != 1 ] \
    || ! .venv/bin/python -c 'import importlib.metadata as m; m.distribution("switchboard")' >/dev/null 2>&1; then
    log "installing locked dependencies ($lock)"
    if [ "$SETUP_FOR" = test ]; then
        uv_pip sync -q "$lock"
    else
        uv_pip install -q -r "$lock"
    fi
    uv_pip install -q --no-deps -e .
    printf '%s\n' "$wanted" >"$stamp"
fi
