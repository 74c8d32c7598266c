#!/usr/bin/env bash
# Local Ray head for development: everything on 127.0.0.1, dashboard/job server on loopback, token auth on.
#   cluster/local_head.sh          start (returns once the job server answers), print how to submit
#   cluster/local_head.sh stop     stop THIS head only (kills its process group; never `ray stop`,
#                                  which would kill every Ray instance on the machine)
# Settings (env): BT_RAY_PORT=6379 BT_DASHBOARD_PORT=8265 BT_AGENT_PORT=52365 BT_NUM_CPUS=(all)
#                 BT_STATE_DIR=runs/local_head (pid file, log)  BT_TEMP_DIR=/tmp/ray_bt_$USER
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAY="$REPO/.venv/bin/ray"; [[ -x "$RAY" ]] || RAY="$(command -v ray)"          # the venv's Ray first
PY="$REPO/.venv/bin/python"; [[ -x "$PY" ]] || PY="$(command -v python3)"      # job entrypoint + probe
PORT="${BT_RAY_PORT:-6379}"
DPORT="${BT_DASHBOARD_PORT:-8265}"
APORT="${BT_AGENT_PORT:-52365}"
STATE="${BT_STATE_DIR:-$REPO/runs/local_head}"
TEMP="${BT_TEMP_DIR:-/tmp/ray_bt_${USER:-$(id -u)}}"
PGID_FILE="$STATE/head.pgid"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # all Ray sockets on 127.0.0.1, not the eth0 address
export RAY_DISABLE_USAGE_STATS=1
export RAY_AUTH_MODE=token                   # explicit: keep token auth on whatever the Ray default

# live (non-zombie) members of a process group: exiting Ray processes linger as zombies for a moment
alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {n++} END {exit !n}'; }
running() { [[ -f "$PGID_FILE" ]] && alive "$(cat "$PGID_FILE")"; }

stop() {
  if ! running; then echo "no local head running (pid file $PGID_FILE)"; rm -f "$PGID_FILE"; return 0; fi
  local pgid; pgid="$(cat "$PGID_FILE")"
  kill -TERM -- "-$pgid" 2>/dev/null || true
  # the GCS and dashboard exit within a second of SIGTERM; the raylet was seen to outlast 12 s of it: KILL after 3 s
  for _ in $(seq 6); do alive "$pgid" || break; sleep 0.5; done
  if alive "$pgid"; then
    kill -KILL -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 10); do alive "$pgid" || break; sleep 1; done
  fi
  rm -f "$PGID_FILE"
  echo "stopped the local head (process group $pgid)"
}

start() {
  if running; then echo "a local head is already running (process group $(cat "$PGID_FILE"))"; exit 1; fi
  mkdir -p "$STATE"
  "$RAY" get-auth-token --generate >/dev/null      # ~/.ray/auth_token, shared by head and clients
  # --block keeps every Ray process in one new session/process group (setsid), so `stop` kills just these.
  nohup setsid "$RAY" start --head --block --node-ip-address=127.0.0.1 --port="$PORT" \
    --dashboard-host=127.0.0.1 --dashboard-port="$DPORT" --dashboard-agent-listen-port="$APORT" \
    ${BT_NUM_CPUS:+--num-cpus="$BT_NUM_CPUS"} --temp-dir="$TEMP" --disable-usage-stats \
    >"$STATE/head.log" 2>&1 </dev/null &
  local pid=$!
  sleep 0.5
  ps -o pgid= -p "$pid" | tr -d ' ' >"$PGID_FILE"
  # Up once the job server answers: 401 (token asked for) counts as up.
  if ! "$PY" - "$DPORT" "$pid" <<'PYEOF'
import os, sys, time, urllib.error, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2); sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        try: os.kill(pid, 0)
        except OSError: sys.exit(1)      # `ray start` exited: see the log
        time.sleep(1)
sys.exit(1)
PYEOF
  then
    echo "the head did not come up; log: $STATE/head.log" >&2; tail -20 "$STATE/head.log" >&2; stop >&2; exit 1
  fi
  cat <<MSG
Local Ray head on 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DPORT (token: ~/.ray/auth_token). Log: $STATE/head.log
Submit from the repo root (the entrypoint uses the venv's python: a bare 'python' is the system one):
  RAY_AUTH_MODE=token $RAY job submit --address http://127.0.0.1:$DPORT --working-dir . \\
    --runtime-env-json '{"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, "excludes": [".venv/", "runs/", "data/"]}' \\
    -- $PY jobs/multi_brain.py --config jobs/configs/multi_brain/demo.yaml
Stop it:  $REPO/cluster/local_head.sh stop
MSG
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (process group $(cat "$PGID_FILE"))"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
