#!/usr/bin/env bash
# Start the dashboard: scripts/run_app.sh PYTHON HOST PORT (called by `make run`).
# Refuses a taken port (and names a free one) instead of letting Streamlit pick another silently.
set -euo pipefail

PY=${1:?usage: run_app.sh PYTHON HOST PORT}
HOST=${2:?usage: run_app.sh PYTHON HOST PORT}
PORT=${3:?usage: run_app.sh PYTHON HOST PORT}
cd "$(dirname "$0")/.."

# Prints nothing and exits 0 when HOST:PORT is free; otherwise prints a free port nearby and exits 1.
if ! free_port=$("$PY" - "$HOST" "$PORT" <<'PYCODE'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])

def free(candidate):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, candidate))
        except OSError:
            return False
        return True

if free(port):
    sys.exit(0)
print(next((p for p in range(port + 1, min(port + 200, 65536)) if free(p)), 0))
sys.exit(1)
PYCODE
); then
  echo "ERROR: port $PORT on $HOST is already in use (another dashboard may be running)." >&2
  if [ "${free_port:-0}" != 0 ]; then
    echo "       Port $free_port is free: make run PORT=$free_port" >&2
  fi
  exit 1
fi

shown_host=$HOST
[ "$HOST" = "0.0.0.0" ] && shown_host=$(hostname -I 2>/dev/null | awk '{print $1}')
echo ">> dropviz dashboard: http://${shown_host:-$HOST}:$PORT   (Ctrl+C stops it)"
exec "$PY" -m dropviz.ui.launch run app.py --server.address "$HOST" --server.port "$PORT"
