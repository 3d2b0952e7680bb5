#!/usr/bin/env bash
# `make run`: migrate and seed, make sure a demo API key exists, then run the web server and one
# arq worker until Ctrl-C (which stops both). The checkout's settings come from .dev/env, which
# scripts/services.sh writes (the Makefile runs it first); the environment wins over it.
# The server's and the worker's logs go to .dev/logs/ (`make logs`), not to this terminal; if
# either stops, the last lines of its log are printed here and this script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
port=${FLOWGATE_PORT:-3001}
logs=.dev/logs
export PICCOLO_CONF=piccolo_conf

say() { echo "flowgate: $*" >&2; }

listening() {  # listening PORT: something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Before anything else: a port taken by another program is the commonest way to fail.
if listening "$port"; then
    say "port $port is in use: set FLOWGATE_PORT"
    exit 1
fi

# The checkout's settings (service URLs, secret key, local webhook allowances), for this script
# and its children; what the environment already sets is kept.
[ -f .dev/env ] || eval "$(scripts/services.sh up)"
while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    name=${line%%=*}
    value=${line#*=}
    value=${value#\'}
    value=${value%\'}
    [ -n "${!name:-}" ] || export "$name=$value"
done <.dev/env

"$bin/flowgate" migrate >/dev/null
key=$("$bin/flowgate" dev-key .dev/demo-api-key)
admin=$("$bin/flowgate" dev-admin)
if [ -z "$admin" ]; then
    # The demo admin was made (and its password shown) by an earlier run.
    admin="    Dashboard login admin@flowgate.local (its password was shown on the first run only); a new one:
                   .venv/bin/flowgate users set-password --email admin@flowgate.local [--password-stdin]
                   (also unlocks a locked account)"
fi

mkdir -p "$logs"
names=(web worker)
pids=()
stop() {
    trap - INT TERM EXIT
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "flowgate stopped (PostgreSQL and Redis keep running; 'make stop' stops them)."
}
trap stop EXIT
trap 'stop; exit 0' INT TERM

started="--- make run, $(date -u +%Y-%m-%dT%H:%M:%SZ) ---"
echo "$started" >>"$logs/web.log"
echo "$started" >>"$logs/worker.log"
"$bin/flowgate" serve --host 0.0.0.0 --port "$port" >>"$logs/web.log" 2>&1 &
pids+=($!)
"$bin/flowgate" worker >>"$logs/worker.log" 2>&1 &
pids+=($!)

died() {  # died INDEX: say which process stopped, with the end of its log
    local name=${names[$1]}
    say "the $name process stopped; the last lines of $logs/$name.log:"
    tail -n 20 "$logs/$name.log" >&2
    if [ "$name" = web ] && tail -n 20 "$logs/$name.log" | grep -qi "address already in use"; then
        say "port $port is in use: set FLOWGATE_PORT"
    fi
}

ours() {  # ours: our own server answers /health (not some other program on the port)
    "$bin/python" - "$port" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1) as answer:
    body = json.load(answer)
sys.exit(0 if isinstance(body, dict) and set(body) == {"status", "database", "redis"} else 1)
PY
}

ready=false
deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$deadline" ]; do
    for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null || { died "$i"; exit 1; }
    done
    if ours; then ready=true; break; fi
    sleep 0.1
done
if ! $ready; then
    say "the web server did not answer on port $port within 60 s; see $logs/web.log"
    exit 1
fi

base="http://localhost:$port/api/v1/public"
cat <<MSG

  flowgate is running.
    API base URL   $base
    Dashboard      http://localhost:$port/dashboard
$admin
    OpenAPI schema http://localhost:$port/schema
    Demo API key   $key   (saved in .dev/demo-api-key)
    Logs           make logs   (.dev/logs/web.log, .dev/logs/worker.log)

  Try it:
    curl -s -X POST $base/agents/workflow_bfsi_marketing_template/execute \\
      -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
      -d '{"input":{"csvData":[{"customerId":"CUST001","name":"John Doe","phone":"+918610560986","city":"Mumbai","income_bracket":"75000-100000","credit_score":"750"}]}}'

  In another terminal of this checkout, .venv/bin/flowgate finds the same services (.dev/env):
    .venv/bin/flowgate keys list

  Ctrl-C stops the web server and the worker.

MSG
code=0
wait -n "${pids[@]}" || code=$?
# On Ctrl-C the children (which handle SIGINT themselves) may stop before this shell runs its
# INT trap: give the trap a moment, so a Ctrl-C is never reported as a crash.
sleep 0.5
for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null || died "$i"
done
exit $((code == 0 ? 1 : code))
