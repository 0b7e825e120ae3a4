#!/usr/bin/env bash
# A PgBouncer in transaction mode in front of the machine's PostgreSQL
# (127.0.0.1:5432), for tests/pooler.rs: what a deployment with a
# transaction-mode pooler between the application and the server does to
# larder's watcher. Needs the `pgbouncer` package (.ci/run installs it).
# Everything lives under $LARDER_PGBOUNCER_DIR (default /tmp/larder-pgbouncer),
# owned by the `postgres` OS user because PgBouncer refuses to run as root.
#
#   scripts/pgbouncer.sh start   # idempotent; prints the URL as an env line
#   scripts/pgbouncer.sh stop    # stops it, removes the folder
#
# Port 56432; every database of the server, as user postgres (trust).
set -euo pipefail

DIR=${LARDER_PGBOUNCER_DIR:-/tmp/larder-pgbouncer}
PORT=56432
BIN=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() {
  [ -f "$DIR/pgbouncer.pid" ] && kill -0 "$(cat "$DIR/pgbouncer.pid" 2>/dev/null)" 2>/dev/null
}

start() {
  if [ ! -x "$BIN" ]; then
    echo "pgbouncer is not installed (apt-get install pgbouncer)" >&2
    exit 1
  fi
  if ! running; then
    mkdir -p "$DIR"
    cat >"$DIR/pgbouncer.ini" <<CONF
[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/users.txt
pool_mode = transaction
# One server session per database: PgBouncer 1.18 (Debian 12's) does not
# carry prepared statements across server sessions (1.21's
# max_prepared_statements does), and diesel prepares every statement.
default_pool_size = 1
max_client_conn = 500
# A test database dropped under a client fails it in seconds, not 2 minutes.
query_wait_timeout = 10
logfile = $DIR/pgbouncer.log
pidfile = $DIR/pgbouncer.pid
ignore_startup_parameters = extra_float_digits,options,statement_timeout,application_name
CONF
    echo '"postgres" ""' >"$DIR/users.txt"
    [ "$(id -u)" = 0 ] && chown -R postgres "$DIR"
    as_pg "$BIN" -d "$DIR/pgbouncer.ini"
    for _ in $(seq 1 50); do
      pg_isready -q -h 127.0.0.1 -p "$PORT" && break
      sleep 0.1
    done
  fi
  echo "LARDER_TEST_PGBOUNCER_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
}

stop() {
  if running; then
    kill "$(cat "$DIR/pgbouncer.pid")"
    for _ in $(seq 1 50); do running || break; sleep 0.1; done
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
