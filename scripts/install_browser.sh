#!/usr/bin/env bash
# Install what tests/test_browser.py needs: Debian's chromium and the python
# playwright package. Idempotent: skips what is already there.
#
# We never run `playwright install`: it downloads its own browser builds from a
# CDN, which is unreachable on CI machines here. The test drives the system
# chromium through executable_path=/usr/bin/chromium instead.
#
# Usage: scripts/install_browser.sh [PYTHON]   (default: python3, or $PYTHON)
set -euo pipefail

PYTHON="${1:-${PYTHON:-python3}}"

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium)"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
fi

if "$PYTHON" -c "import playwright" >/dev/null 2>&1; then
    echo "python playwright already installed for $PYTHON"
else
    "$PYTHON" -m pip install "playwright>=1.44"
fi

chromium --version || true
