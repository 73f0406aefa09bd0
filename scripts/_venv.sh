# Sourced by scripts/serve and scripts/test: create or reuse .venv and install the project.
# Usage: ensure_venv [EXTRAS]   (EXTRAS e.g. "test")

ensure_venv() {
    local extras="${1:-}"
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "scripts: installing python3 and venv with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
        python=python3
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "scripts: Python >= 3.11 is required ($("$python" --version))" >&2
        return 1
    fi
    if [ ! -x .venv/bin/python ]; then
        "$python" -m venv .venv
    fi
    # reinstall only when the project's requirements changed
    local stamp=".venv/.improv-installed-${extras:-base}"
    local digest
    digest="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e "$spec"
        echo "$digest" > "$stamp"
    fi
}
