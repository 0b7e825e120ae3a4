#!/usr/bin/env bash
# A private PostgreSQL primary with two streaming replicas, for larder's
# replica tests: the machine's own cluster allows no replication connections
# and is never touched. Everything lives under $LARDER_PG_REPLICA_DIR
# (default /tmp/larder-pg-replica), owned by the `postgres` OS user because
# initdb refuses to run as root.
#
#   scripts/pg-replica.sh start          # idempotent; prints the URLs as env lines
#   scripts/pg-replica.sh stop           # stops all three, removes the folder
#   scripts/pg-replica.sh replica-stop   # stops the lagging replica only (tests)
#   scripts/pg-replica.sh replica-start  # starts it again
#   scripts/pg-replica.sh promoted-start # a fresh replica, promoted (tests)
#   scripts/pg-replica.sh promoted-stop  # stops and removes it
#   scripts/pg-replica.sh standby-start  # a fresh replica, left in recovery (tests promote it)
#   scripts/pg-replica.sh standby-stop   # stops and removes it
#
# Ports: 55432 primary, 55433 replica applying WAL 200 ms late
# (recovery_min_apply_delay: it lags by a known amount), 55434 replica with
# no delay, 25435 a replica promoted to a primary of its own (only between
# promoted-start and promoted-stop), 25436 a replica a test promotes itself
# with `pg_promote()` while connected to it (between standby-start and
# standby-stop; LARDER_PG_STANDBY_PORT moves it).
set -euo pipefail

BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
DIR=${LARDER_PG_REPLICA_DIR:-/tmp/larder-pg-replica}
PRIMARY_PORT=55432
LAGGING_PORT=55433
FAST_PORT=55434
# The servers tests start while the suite runs listen below Linux's ephemeral
# range (32768-60999): by then thousands of client connections have come and
# gone, and one still open on the port would keep the server from binding it.
PROMOTED_PORT=25435
STANDBY_PORT=${LARDER_PG_STANDBY_PORT:-25436}
LAG=${LARDER_PG_REPLICA_LAG:-200ms}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { # data dir
  as_pg "$BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

start_server() { # data dir
  running "$1" && return 0
  if ! as_pg "$BIN/pg_ctl" -D "$1" -l "$1.log" -w -t 60 start >/dev/null; then
    echo "pg-replica.sh: the server in $1 did not start; its log ends:" >&2
    tail -n 20 "$1.log" >&2 || true
    return 1
  fi
}

stop_server() { # data dir
  if [ -d "$1" ] && running "$1"; then
    as_pg "$BIN/pg_ctl" -D "$1" -m fast -w -t 60 stop >/dev/null
  fi
}

make_replica() { # data dir, port, apply delay
  [ -d "$1" ] && return 0
  as_pg "$BIN/pg_basebackup" -R -X stream -c fast -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$1"
  cat <<CONF | as_pg tee -a "$1/postgresql.auto.conf" >/dev/null
port = $2
hot_standby = on
recovery_min_apply_delay = '$3'
hot_standby_feedback = on
CONF
}

start() {
  if [ ! -d "$DIR" ]; then
    mkdir -p "$DIR"
    chown postgres "$DIR" 2>/dev/null || true
  fi
  if [ ! -d "$DIR/primary" ]; then
    as_pg "$BIN/initdb" -D "$DIR/primary" -U postgres -A trust >/dev/null
    cat <<CONF | as_pg tee -a "$DIR/primary/postgresql.conf" >/dev/null
port = $PRIMARY_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = replica
max_wal_senders = 8
max_connections = 200
fsync = off
# Without slots a replica more than a checkpoint behind loses its stream for
# good ("requested WAL segment … has already been removed"): every test's
# DROP DATABASE forces a checkpoint, and a busy 2-core machine once left the
# fast replica that far behind. Keep WAL for replicas that fall behind.
wal_keep_size = 1024MB
CONF
    echo "host replication all 127.0.0.1/32 trust" | as_pg tee -a "$DIR/primary/pg_hba.conf" >/dev/null
  fi
  start_server "$DIR/primary"
  make_replica "$DIR/lagging" "$LAGGING_PORT" "$LAG"
  make_replica "$DIR/fast" "$FAST_PORT" 0
  start_server "$DIR/lagging"
  start_server "$DIR/fast"
  echo "LARDER_TEST_PG_PRIMARY_URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/postgres"
  echo "LARDER_TEST_PG_REPLICA_URL=postgres://postgres@127.0.0.1:$LAGGING_PORT/postgres"
  echo "LARDER_TEST_PG_FAST_REPLICA_URL=postgres://postgres@127.0.0.1:$FAST_PORT/postgres"
}

# A replica of the primary as it is now, promoted at once: it answers like a
# replica that failed over, and goes its own way from there.
promoted_start() {
  make_replica "$DIR/promoted" "$PROMOTED_PORT" 0
  start_server "$DIR/promoted"
  as_pg "$BIN/pg_ctl" -D "$DIR/promoted" -w -t 60 promote >/dev/null
}

promoted_stop() {
  stop_server "$DIR/promoted"
  rm -rf "$DIR/promoted" "$DIR/promoted.log"
}

# A replica of the primary as it is now, in recovery until a test promotes
# it (`SELECT pg_promote()`) while its connections live on.
standby_start() {
  make_replica "$DIR/standby-$STANDBY_PORT" "$STANDBY_PORT" 0
  start_server "$DIR/standby-$STANDBY_PORT"
}

standby_stop() {
  stop_server "$DIR/standby-$STANDBY_PORT"
  rm -rf "$DIR/standby-$STANDBY_PORT" "$DIR/standby-$STANDBY_PORT.log"
}

stop() {
  promoted_stop
  standby_stop
  stop_server "$DIR/fast"
  stop_server "$DIR/lagging"
  stop_server "$DIR/primary"
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  replica-stop) stop_server "$DIR/lagging" ;;
  replica-start) start_server "$DIR/lagging" ;;
  promoted-start) promoted_start ;;
  promoted-stop) promoted_stop ;;
  standby-start) standby_start ;;
  standby-stop) standby_stop ;;
  *) echo "usage: $0 start|stop|replica-stop|replica-start|promoted-start|promoted-stop|standby-start|standby-stop" >&2; exit 2 ;;
esac
