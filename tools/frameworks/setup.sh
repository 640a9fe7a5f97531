#!/usr/bin/env bash
# The framework adapters' test environments: Freqtrade and NautilusTrader each in its own
# virtual environment (each pins its own ccxt / engine), with permitchain-client installed.
# Then run their tests:
#   eval "$(tools/frameworks/setup.sh)"      # prints the variables to export
#   .venv/bin/python -m pytest -q -s -m frameworks tests/client/test_frameworks.py
set -euo pipefail
cd "$(dirname "$0")/../.."
base="${FRAMEWORK_VENVS:-/tmp/permitchain-frameworks}"
mkdir -p "$base"
make_venv() {  # name, packages...
  local dir="$base/$1"; shift
  if [ ! -x "$dir/bin/python" ]; then python3 -m venv "$dir"; fi
  "$dir/bin/pip" install -q "$@" ./clients/python >&2
}
make_venv freqtrade freqtrade
make_venv nautilus nautilus_trader
echo "export PERMITCHAIN_FREQTRADE_PYTHON=$base/freqtrade/bin/python"
echo "export PERMITCHAIN_NAUTILUS_PYTHON=$base/nautilus/bin/python"
