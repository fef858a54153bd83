#!/usr/bin/env bash
# Demo of the BioXen deployments on this machine, everything on loopback:
#   1. `prefect server start` (API + UI at http://127.0.0.1:$PREFECT_PORT)
#   2-3. deployments/setup.sh: the `bioxen-process` work pool (type process),
#        `prefect deploy --all` from the repository root (reads prefect.yaml), automations
#   4. `prefect worker start --pool bioxen-process`
#   5. a vm-lifecycle run and a small comparison run, watched until they finish
# then keeps serving until Ctrl-C (or, with --exit, stops right away); on the way out it stops
# the worker, then the server.
#
# Usage: deployments/run_local.sh [--no-trigger] [--exit]
# Environment (all optional):
#   PREFECT_PORT      server port on 127.0.0.1 (default 4200)
#   BIOXEN_DEMO_DIR   where the demo keeps PREFECT_HOME, the Prefect database, logs and
#                     results (default: ~/.bioxen/prefect-demo)
#   BIOXEN_HOME       bio-VM state store (default: $BIOXEN_DEMO_DIR/bioxen-home)
set -euo pipefail

trigger=1
stay=1
for arg in "$@"; do
    case "$arg" in
        --no-trigger) trigger=0 ;;
        --exit) stay=0 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) printf 'unknown argument: %s\n' "$arg" >&2; exit 2 ;;
    esac
done

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${PREFECT_PORT:-4200}"
if ! [[ "$port" =~ ^[0-9]+$ ]] || (( port < 1 || port > 65535 )); then
    printf 'PREFECT_PORT must be a port number, got %q\n' "$port" >&2
    exit 2
fi
demo_dir="${BIOXEN_DEMO_DIR:-$HOME/.bioxen/prefect-demo}"
mkdir -p -- "$demo_dir"
demo_dir="$(cd -- "$demo_dir" && pwd)"

export PREFECT_HOME="$demo_dir/prefect-home"
export PREFECT_API_URL="http://127.0.0.1:${port}/api"
export PREFECT_API_DATABASE_CONNECTION_URL="sqlite+aiosqlite:///${demo_dir}/prefect.db"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export BIOXEN_HOME="${BIOXEN_HOME:-$demo_dir/bioxen-home}"
export BIOXEN_PROJECT_DIR="$repo_dir"   # the deployments' pull step changes into it
mkdir -p -- "$PREFECT_HOME" "$BIOXEN_HOME"

command -v prefect >/dev/null || { echo "prefect is not on PATH (pip install -e .)" >&2; exit 1; }

# Job control: each background job gets a process group of its own, and SIGINT is not
# ignored in it (a non-interactive shell's background jobs ignore SIGINT, and the worker
# shuts down by sending itself SIGINT when it receives SIGTERM).
set -m
server_pid=""
worker_pid=""
stop() {
    # The worker first, while the server can still record its runs' states.
    for pid in "$worker_pid" "$server_pid"; do
        [[ -n "$pid" ]] || continue
        kill -TERM -- "-$pid" 2>/dev/null || continue
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
}
trap stop EXIT
trap 'exit 130' INT TERM

echo "Starting the Prefect server on 127.0.0.1:${port} (log: $demo_dir/server.log)"
prefect server start --host 127.0.0.1 --port "$port" >"$demo_dir/server.log" 2>&1 &
server_pid=$!

health_url="http://127.0.0.1:${port}/api/health"
healthy() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
        "$health_url" 2>/dev/null
}
for _ in $(seq 1 180); do
    healthy && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "the server exited:" >&2
        tail -n 40 "$demo_dir/server.log" >&2
        exit 1
    fi
    sleep 1
done
healthy || { echo "the server is not healthy after 180 s" >&2; exit 1; }

"$repo_dir/deployments/setup.sh"

echo "Starting a worker on the bioxen-process pool (log: $demo_dir/worker.log)"
prefect worker start --pool bioxen-process >"$demo_dir/worker.log" 2>&1 &
worker_pid=$!

if (( trigger )); then
    prefect deployment run vm-lifecycle/vm-lifecycle --watch --watch-timeout 600
    # A small comparison (parameters as JSON; the path travels as an argument, not as code).
    params="$(python3 -c 'import json, sys; print(json.dumps({
        "organisms": ["syn3a", "ecoli"], "replicates": 1, "hours": 2,
        "package": "gfp_reporter", "out_dir": sys.argv[1]}))' "$demo_dir/results")"
    prefect deployment run compare-organisms/nightly-comparison --params "$params" \
        --watch --watch-timeout 600
    echo "Results: $demo_dir/results/latest (summary.csv, timeseries.parquet, growth.png)"
fi

echo "Prefect UI: http://127.0.0.1:${port}   (runs, logs and the compare-organisms artifacts)"
if (( stay )); then
    echo "Serving; press Ctrl-C to stop the worker and the server."
    wait "$server_pid"
fi
