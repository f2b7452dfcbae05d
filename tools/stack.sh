#!/usr/bin/env bash
# The embedded local stack: Azurite (blob), Prefect server + UI, a process work pool and its
# worker, and the Azurite blob watcher. Idempotent: `up` starts only what is not running,
# `down` stops what is. Everything lives under $RESTYLE_STACK_DIR (logs in its logs/ folder).
#
#   tools/stack.sh up|down|status|env|restart worker|restart prefect-server
#
# `restart` stops and starts one part alone (the fault tests kill or restart them).
# Ports and folder are overridable so the test suite can run its own stack beside a demo one:
#   RESTYLE_STACK_DIR (.stack)  AZURITE_PORT (10000)  PREFECT_PORT (4200)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
stack="${RESTYLE_STACK_DIR:-$repo/.stack}"
azurite_port="${AZURITE_PORT:-10000}"
prefect_port="${PREFECT_PORT:-4200}"
pool="${RESTYLE_WORK_POOL:-restyle-cpu}"
max_runs="${RESTYLE_MAX_CONCURRENT_RUNS:-2}"
venv="$repo/.venv/bin"
mkdir -p "$stack/logs" "$stack/pids" "$stack/prefect"

export_env() {
  export PREFECT_HOME="$stack/prefect"
  export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api"
  export PREFECT_UI_URL="http://127.0.0.1:$prefect_port"
  export PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///$stack/prefect/prefect.db"
  export PREFECT_SERVER_ANALYTICS_ENABLED=false
  export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-INFO}"
  # Flow runs send a heartbeat this often; runs silent for three periods are marked Crashed
  # (deployments/post_deploy.py reads the same setting).
  export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
  export PREFECT_PORT="$prefect_port" AZURITE_PORT="$azurite_port" RESTYLE_STACK_DIR="$stack"
  export RESTYLE_REPO="$repo"
  export RESTYLE_STORAGE__CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:$azurite_port/devstoreaccount1;"
  export RESTYLE_WATCHER__STATE_PATH="$stack/watcher-state.json"
  export RESTYLE_WORK_DIR="$stack/work"
  export PATH="$venv:$PATH"
}

running() {  # running NAME: is the process recorded in pids/NAME alive?
  local pidfile="$stack/pids/$1"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start() {  # start NAME CMD...: run CMD detached, logging to logs/NAME.log
  local name="$1"; shift
  if running "$name"; then echo "  $name: already running (pid $(cat "$stack/pids/$name"))"; return; fi
  setsid "$@" >>"$stack/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$stack/pids/$name"
  echo "  $name: started (pid $!, log $stack/logs/$name.log)"
}

wait_for() {  # wait_for WHAT SECONDS CMD...: retry CMD until it succeeds
  local what="$1" seconds="$2"; shift 2
  for _ in $(seq 1 $((seconds * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "  $what did not come up within ${seconds}s; see $stack/logs/" >&2; return 1
}

up() {
  export_env
  echo "restyle stack in $stack"
  start azurite "$repo/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 \
    --blobPort "$azurite_port" --location "$stack/azurite" --disableTelemetry
  start_server
  wait_for "Azurite" 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$azurite_port"
  if ! "$venv/prefect" work-pool inspect "$pool" >/dev/null 2>&1; then
    "$venv/prefect" work-pool create "$pool" --type process >/dev/null
  fi
  "$venv/prefect" work-pool set-concurrency-limit "$pool" "$max_runs" >/dev/null
  (cd "$repo" && "$venv/prefect" --no-prompt deploy --all >"$stack/logs/deploy.log" 2>&1) \
    || { echo "  prefect deploy failed; see $stack/logs/deploy.log" >&2; exit 1; }
  (cd "$repo" && "$venv/python" -m deployments.post_deploy >>"$stack/logs/deploy.log" 2>&1) \
    || { echo "  post-deploy failed; see $stack/logs/deploy.log" >&2; exit 1; }
  echo "  deployments and automations: registered (log $stack/logs/deploy.log)"
  start_worker
  # A watcher started with other containers to watch is restarted with the current ones.
  local watching="${RESTYLE_WATCHER__CONTAINERS:-default}"
  if running watcher && [[ "$(cat "$stack/watcher.containers" 2>/dev/null)" != "$watching" ]]; then
    stop watcher
  fi
  echo "$watching" >"$stack/watcher.containers"
  start watcher "$venv/python" -m deployments.azurite_watcher
  echo "Prefect UI: $PREFECT_UI_URL"
}

start_worker() {
  start worker "$venv/prefect" worker start --pool "$pool" --type process
}

start_server() {
  start prefect-server "$venv/prefect" server start --host 127.0.0.1 --port "$prefect_port"
  wait_for "Prefect server" 120 curl -sf "$PREFECT_API_URL/health"
}

restart() {  # restart worker|prefect-server
  export_env
  case "$1" in
    worker) stop worker; start_worker ;;
    prefect-server) stop prefect-server; start_server ;;
    *) echo "restart: worker or prefect-server, not '$1'" >&2; exit 2 ;;
  esac
}

stop() {  # stop NAME: end the process group recorded in pids/NAME
  local name="$1"
  if running "$name"; then
    local pid; pid="$(cat "$stack/pids/$name")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "  $name: stopped"
  fi
  rm -f "$stack/pids/$name"
}

down() {
  for name in watcher worker prefect-server azurite; do stop "$name"; done
}

status() {
  for name in azurite prefect-server worker watcher; do
    if running "$name"; then echo "$name: running"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  restart) restart "${2:-}" ;;
  env) export_env; for v in $(compgen -e | grep -E '^(PREFECT_|RESTYLE_|AZURITE_PORT$)'); do
         printf 'export %s=%q\n' "$v" "${!v}"; done ;;
  *) echo "usage: $0 up|down|status|env|restart worker|restart prefect-server" >&2; exit 2 ;;
esac
