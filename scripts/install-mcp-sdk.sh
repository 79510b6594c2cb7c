#!/usr/bin/env bash
# Installs the official MCP Python SDK (PyPI package `mcp`) into a virtualenv, for the MCP
# integration tests (crates/cli/tests/mcp.rs), which drive `agentbox mcp` and `/mcp` with it.
# Usage: scripts/install-mcp-sdk.sh [VENV_DIR]   (default: target/mcp-venv). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-target/mcp-venv}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import mcp' 2>/dev/null; then
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3-venv
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'mcp>=2.3,<3'
"$venv/bin/python" -c 'import mcp'
