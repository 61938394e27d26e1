# Shared set-up for scripts/serve and scripts/test: a project virtualenv with the package installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BRIDGE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {  # $1: pip extras, e.g. "[test]" or ""
    # Installs only when pyproject.toml (the dependencies) changed since the last install with these extras: a
    # stamp of its hash per extras in .venv (an install with extras also covers the plain one). The package is
    # installed editable, so source edits need no reinstall.
    local stamp name="$VENV/.bridge-stamp${1:+-$(printf '%s' "$1" | tr -dc 'a-zA-Z0-9_,')}" found
    if [ ! -x "$VENV/bin/python" ]; then
        rm -f "$VENV"/.bridge-stamp*  # a new interpreter: nothing installed counts
        "$PYTHON" -m venv "$VENV"
    fi
    stamp="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    local candidates=("$name")
    [ -z "$1" ] && candidates=("$VENV"/.bridge-stamp*)
    for found in "${candidates[@]}"; do
        if [ -f "$found" ] && [ "$(cat "$found")" = "$stamp" ]; then
            return 0
        fi
    done
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT$1"
    echo "$stamp" > "$name"
}

# The check bridge/testing/postgres.py makes: initdb and postgres in pg_config's bindir or /usr/lib/postgresql/<N>/bin.
has_postgres_server() {
    local bindir
    bindir="$(pg_config --bindir 2>/dev/null || true)"
    [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && [ -x "$bindir/postgres" ] && return 0
    for bindir in /usr/lib/postgresql/*/bin; do
        [ -x "$bindir/initdb" ] && [ -x "$bindir/postgres" ] && return 0
    done
    return 1
}

# tmux drives the wake-pipeline tests, npm installs the agent CLIs, postgresql is the server the tests start themselves.
ensure_system_packages() {
    local missing=()
    command -v tmux >/dev/null 2>&1 || missing+=(tmux)
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    has_postgres_server || missing+=(postgresql)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

ensure_agent_clis() {  # the real Claude Code and Codex CLIs, pinned in scripts/agent-clis/package-lock.json
    local dir="$ROOT/scripts/agent-clis" stamp
    stamp="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ -f "$dir/node_modules/.bridge-stamp" ] && [ "$(cat "$dir/node_modules/.bridge-stamp")" = "$stamp" ]; then
        return 0
    fi
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    "$dir/node_modules/.bin/claude" --version >/dev/null
    "$dir/node_modules/.bin/codex" --version >/dev/null
    echo "$stamp" > "$dir/node_modules/.bridge-stamp"
}

ensure_mcp_ts_client() {  # the official TypeScript MCP SDK client, pinned in tests/mcp_ts/package-lock.json
    local dir="$ROOT/tests/mcp_ts" stamp
    stamp="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ -f "$dir/node_modules/.bridge-stamp" ] && [ "$(cat "$dir/node_modules/.bridge-stamp")" = "$stamp" ]; then
        return 0
    fi
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    (cd "$dir" && node --input-type=module -e 'import "@modelcontextprotocol/sdk/client/streamableHttp.js"')
    echo "$stamp" > "$dir/node_modules/.bridge-stamp"
}
