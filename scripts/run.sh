#!/usr/bin/env bash
# `make run`: migrate and seed, make sure a demo API key exists, then run the web server and one
# arq worker until Ctrl-C (which stops both). Expects DATABASE_URL and REDIS_URL in the
# environment (the Makefile gets them from scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
port=${FLOWGATE_PORT:-3001}
export PICCOLO_CONF=piccolo_conf
# Local development talks to webhook receivers on this machine.
export FLOWGATE_WEBHOOK_ALLOW_HTTP=${FLOWGATE_WEBHOOK_ALLOW_HTTP:-true}
export FLOWGATE_WEBHOOK_ALLOW_PRIVATE=${FLOWGATE_WEBHOOK_ALLOW_PRIVATE:-true}

# One secret for every process of this checkout (CSRF tokens), kept across restarts.
if [ ! -s .dev/secret-key ]; then
    (umask 077 && "$bin/python" -c 'import secrets; print(secrets.token_hex(32))' > .dev/secret-key)
fi
export FLOWGATE_SECRET_KEY=${FLOWGATE_SECRET_KEY:-$(cat .dev/secret-key)}

"$bin/flowgate" migrate >/dev/null
key=$("$bin/flowgate" dev-key .dev/demo-api-key)
admin=$("$bin/flowgate" dev-admin)

pids=()
stop() {
    trap - INT TERM EXIT
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "flowgate stopped (PostgreSQL and Redis keep running; 'make stop' stops them)."
}
trap stop INT TERM EXIT

"$bin/flowgate" serve --host 0.0.0.0 --port "$port" &
pids+=($!)
"$bin/flowgate" worker &
pids+=($!)

for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

base="http://localhost:$port/api/v1/public"
cat <<MSG

  flowgate is running.
    API base URL   $base
    Dashboard      http://localhost:$port/dashboard
$admin
    OpenAPI schema http://localhost:$port/schema
    Demo API key   $key   (saved in .dev/demo-api-key)

  Try it:
    curl -s -X POST $base/agents/workflow_bfsi_marketing_template/execute \\
      -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
      -d '{"input":{"csvData":[{"customerId":"CUST001","name":"John Doe","phone":"+918610560986","city":"Mumbai","income_bracket":"75000-100000","credit_score":"750"}]}}'

  Ctrl-C stops the web server and the worker.

MSG
wait -n "${pids[@]}"
