#!/bin/sh
# Install devstack into ./.venv (a virtual environment, so it works where the system's Python is
# externally managed, PEP 668). `./install.sh --test` adds the test tools. Safe to run again.
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || {
    echo "install.sh: '$PYTHON -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 1
  }
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".$extras"
echo "devstack installed in $(pwd)/.venv: run '. .venv/bin/activate' to put 'devstack' on PATH"
