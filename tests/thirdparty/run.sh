#!/usr/bin/env bash
# Third-party clients, unmodified, against `kuant exchange-sim`: each is given only the
# simulator's URL and a key and secret it accepts.
#
#   tests/thirdparty/run.sh [KUANT_BIN]      (default: target/debug/kuant)
#
# python-binance is pinned and installed into a virtualenv outside the clone
# (~/.cache/kuant/python-binance-<version>/, `KUANT_CACHE_DIR` moves it) on first use.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
KUANT=${1:-$ROOT/target/debug/kuant}
PYTHON_BINANCE=1.0.37
CACHE=${KUANT_CACHE_DIR:-$HOME/.cache/kuant}
VENV=$CACHE/python-binance-$PYTHON_BINANCE

say() { printf 'thirdparty: %s\n' "$*" >&2; }
[ -x "$KUANT" ] || { say "no kuant binary at $KUANT (cargo build -p kuant)"; exit 2; }

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import binance' 2>/dev/null; then
  say "installing python-binance $PYTHON_BINANCE into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian splits venv out of python3.
    say "python3 -m venv needs python3-venv: installing it"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; else sudo apt-get install -y -qq python3-venv >/dev/null; fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "python-binance==$PYTHON_BINANCE"
fi

WORK=$(mktemp -d)
SIM_PID=
cleanup() {
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'apiKey: thirdparty-key\napiSecret: thirdparty-secret\n' >"$WORK/keys.yaml"
"$KUANT" exchange-sim --listen "127.0.0.1:$PORT" --keys "$WORK/keys.yaml" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done

say "python-binance $PYTHON_BINANCE against kuant exchange-sim at http://127.0.0.1:$PORT"
if ! "$VENV/bin/python" "$HERE/python_binance_client.py" "http://127.0.0.1:$PORT" thirdparty-key thirdparty-secret; then
  say "failed; the simulator's log:"
  cat "$WORK/sim.log" >&2
  exit 1
fi
