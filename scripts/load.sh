#!/usr/bin/env bash
# Load and faults against `larder-blog serve` (issue 14), with wrk on loopback.
#
#   scripts/load.sh [--short] [--backends sqlite,postgres] [--duration SECONDS]
#                   [--only 1,2,3,4,5] [--profile release|dev] [--features LIST]
# (--profile dev and --features let CI reuse the binary its tests built:
# the short form checks hangs and staleness, not speed.)
#
# Scenarios, each on a fresh database per backend (SQLite: a temporary file;
# PostgreSQL: the database larder_load, dropped at the end):
#   1 reads: the front page and random post pages, larder with cache on and
#     off and the plain diesel baseline, and /static (the ceiling);
#   2 reads with comment posts at a steady rate, then every post page is
#     compared with SQL (check-pages): no stale page;
#   3 two server processes on one database: how soon a comment posted
#     through one shows on the other's page (idle and under load), and two
#     processes sharing one port with SO_REUSEPORT;
#   4 faults under load (PostgreSQL): every connection of the database
#     terminated every 2 s, the panic route hit, and (not with --short) the
#     server restarted once;
#   5 back-pressure: pool of 2, cache off, 64 connections: each request
#     succeeds or gets a 503 within the pool timeout, none hangs.
# Prints one table. Exits non-zero on a hang (a wrk timeout, a server that
# does not stop), a stale page, a leaked connection (/stats shows one in use
# when idle), or a failed request while connections are terminated.
#
# Environment: LARDER_TEST_POSTGRES_URL (default
# postgres://postgres@127.0.0.1:5432/postgres) names the PostgreSQL server,
# LARDER_TEST_MYSQL_URL (default mysql://root@127.0.0.1:3306/mysql) the
# MariaDB/MySQL one for `--backends …,mysql` (built with larder-blog/mysql);
# PG_RESTART_CMD overrides the restart command (default: pg_ctlcluster
# --skip-systemctl-redirect <version> main restart).
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=0
PROFILE=release
FEATURES=""
ONLY="1,2,3,4,5"
BACKENDS="sqlite,postgres"
DURATION=""
while [ $# -gt 0 ]; do
  case "$1" in
    --short) SHORT=1 ;;
    --backends) BACKENDS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --profile) PROFILE="$2"; shift ;;
    --features) FEATURES="$2"; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$DURATION" ]; then
  if [ "$SHORT" = 1 ]; then DURATION=3; else DURATION=15; fi
fi
if [ "$SHORT" = 1 ]; then
  SEED="500,1000,4000"; WARMUP=1; TRIALS=20; FAULT_SECONDS=6
else
  SEED="2000,5000,20000"; WARMUP=3; TRIALS=50; FAULT_SECONDS=30
fi
IFS=, read -r SEED_USERS SEED_POSTS _ <<<"$SEED"
export LOAD_WRK_DIR="$PWD/scripts/wrk" LOAD_POSTS="$SEED_POSTS" LOAD_USERS="$SEED_USERS"
PG_ADMIN="${LARDER_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_URL="${PG_ADMIN%/*}/larder_load"
MY_ADMIN="${LARDER_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/mysql}"
MY_URL="${MY_ADMIN%/*}/larder_load"
# mysql_admin SQL: through the mysql client, with the URL's user, password,
# host and port.
mysql_admin() {
  local rest=${MY_ADMIN#mysql://}
  local auth=${rest%%@*} hostport=${rest#*@}
  hostport=${hostport%%/*}
  local host=${hostport%%:*} port=3306 password=""
  [[ $hostport == *:* ]] && port=${hostport#*:}
  [[ $auth == *:* ]] && password=${auth#*:}
  MYSQL_PWD="$password" mysql -h "$host" -P "$port" -u "${auth%%:*}" -e "$1"
}
if [[ ",$BACKENDS," == *,mysql,* ]] && [ -z "$FEATURES" ]; then FEATURES="larder-blog/mysql"; fi

if ! command -v wrk >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi

echo "== building the $PROFILE binary"
if [ -n "$FEATURES" ]; then
  # Workspace features (larder-cli/mysql…) as the tests were built with.
  cargo build --profile "$PROFILE" --locked -q --workspace --bins --features "$FEATURES"
else
  cargo build --profile "$PROFILE" --locked -q -p larder-blog
fi
if [ "$PROFILE" = dev ]; then BIN="$PWD/target/debug/larder-blog"; else BIN="$PWD/target/$PROFILE/larder-blog"; fi

WORK="$(mktemp -d)"
PIDS=()
FAILURES=()
ROWS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [[ ",$BACKENDS," == *,postgres,* ]]; then
    psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS larder_load WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [[ ",$BACKENDS," == *,mysql,* ]]; then
    mysql_admin "DROP DATABASE IF EXISTS larder_load" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  FAILURES+=("$*")
}

# start_server NAME URL [serve options…]: sets ADDR and SERVER_PID.
start_server() {
  local name=$1 url=$2
  shift 2
  RUST_BACKTRACE=0 "$BIN" --url "$url" serve --seed "$SEED" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 1200); do
    if grep -q "^listening on " "$WORK/$name.out" 2>/dev/null; then
      ADDR=$(sed -n 's/^listening on //p' "$WORK/$name.out")
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      cat "$WORK/$name.err" >&2
      fail "server $name exited at start"
      return 1
    fi
    sleep 0.1
  done
  fail "server $name did not start within 120 s"
  return 1
}

# stop_server PID NAME: SIGTERM, and a hang if it has not ended within 10 s.
stop_server() {
  local pid=$1 name=$2
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  fail "server $name did not shut down within 10 s of SIGTERM"
  kill -9 "$pid" 2>/dev/null || true
}

# check_pool ADDR NAME: once the requests still in flight when wrk stopped
# have finished (each ends within the pool timeout plus its queries), every
# connection must be back in the pool; one that never comes back is a leak.
check_pool() {
  local stats=""
  for _ in $(seq 1 100); do
    stats=$(curl -s --max-time 10 "$1/stats" || true)
    grep -q '"in_use":0' <<<"$stats" && return 0
    sleep 0.1
  done
  fail "$2: connections still in use 10 s after the load stopped: $(grep -o '"pool":{[^}]*}' <<<"$stats")"
}

# wrk_run SCENARIO BACKEND MODE URL SCRIPT [wrk options…]: one table row.
wrk_run() {
  local scenario=$1 backend=$2 mode=$3 url=$4 script=$5
  shift 5
  local out
  out=$(wrk -t2 -c64 -d"${DURATION}s" --timeout 10s -s "scripts/wrk/$script" "$@" "$url" 2>&1 || true)
  local result
  result=$(grep '^RESULT' <<<"$out" || true)
  if [ -z "$result" ]; then
    echo "$out" >&2
    fail "$scenario $backend $mode: wrk gave no result"
    return 0
  fi
  read -r _ rps p50 p99 non2xx timeouts sockerr requests <<<"$result"
  ROWS+=("$(printf '%-16s %-9s %-12s %10s %9s %9s %8s %8s %8s' \
    "$scenario" "$backend" "$mode" "$rps" "$p50" "$p99" "$non2xx" "$timeouts" "$requests")")
  echo "   $scenario $backend $mode: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, timeouts $timeouts, socket errors $sockerr"
  LAST_NON2XX=$non2xx
  if [ "$timeouts" != 0 ]; then
    fail "$scenario $backend $mode: $timeouts requests timed out (a hang)"
  fi
}

warm() { # URL: fills the cache, not measured
  wrk -t2 -c16 -d"${WARMUP}s" -s scripts/wrk/pages.lua "$1" >/dev/null 2>&1 || true
}

fresh_db() { # BACKEND: sets URL to a fresh database
  case "$1" in
    sqlite) URL="sqlite://$WORK/blog-$RANDOM.db" ;;
    postgres)
      psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS larder_load WITH (FORCE)" >/dev/null
      psql "$PG_ADMIN" -qc "CREATE DATABASE larder_load" >/dev/null
      URL="$PG_URL" ;;
    mysql)
      mysql_admin "DROP DATABASE IF EXISTS larder_load"
      mysql_admin "CREATE DATABASE larder_load"
      URL="$MY_URL" ;;
    *) echo "unknown backend $1" >&2; exit 2 ;;
  esac
}

scenario_reads() { # BACKEND
  local backend=$1
  for mode in larder-on larder-off plain; do
    case $mode in
      larder-on) opts=(--cache on) ;;
      larder-off) opts=(--cache off) ;;
      plain) opts=(--mode plain) ;;
    esac
    start_server "reads-$backend-$mode" "$URL" --listen 127.0.0.1:0 "${opts[@]}" || return 0
    warm "$ADDR"
    LOAD_FRONT_PERCENT=0 wrk_run "1 front page" "$backend" "$mode" "$ADDR/" report.lua
    LOAD_FRONT_PERCENT=0 wrk_run "1 post pages" "$backend" "$mode" "$ADDR" pages.lua
    if [ "$mode" = larder-on ]; then
      wrk_run "1 /static" "$backend" "$mode" "$ADDR/static" report.lua
    fi
    check_pool "$ADDR" "reads $backend $mode"
    stop_server "$SERVER_PID" "reads-$backend-$mode"
  done
}

scenario_writes() { # BACKEND
  local backend=$1
  start_server "writes-$backend" "$URL" --listen 127.0.0.1:0 || return 0
  warm "$ADDR"
  # Two connections, each waiting 40 ms between posts: about 50 comments/s.
  LOAD_COMMENT_INTERVAL_MS=40 wrk -t1 -c2 -d"${DURATION}s" --timeout 10s \
    -s scripts/wrk/comments.lua "$ADDR" >"$WORK/comments.wrk" 2>&1 &
  local writer=$!
  LOAD_FRONT_PERCENT=10 wrk_run "2 reads+writes" "$backend" larder-on "$ADDR" pages.lua
  wait "$writer" || true
  local result
  result=$(grep '^RESULT' "$WORK/comments.wrk" || true)
  if [ -n "$result" ]; then
    read -r _ rps p50 p99 non2xx timeouts _ requests <<<"$result"
    ROWS+=("$(printf '%-16s %-9s %-12s %10s %9s %9s %8s %8s %8s' \
      "2 comment posts" "$backend" larder-on "$rps" "$p50" "$p99" "$non2xx" "$timeouts" "$requests")")
    [ "$timeouts" = 0 ] || fail "2 $backend: $timeouts comment posts timed out (a hang)"
    [ "$non2xx" = 0 ] || fail "2 $backend: $non2xx comment posts failed"
  else
    fail "2 $backend: the comment writer gave no result"
  fi
  # Writes stopped; 300 ms is three times the default max_staleness.
  if "$BIN" --url "$URL" check-pages --server "$ADDR" --after-ms 300 >"$WORK/check.out" 2>&1; then
    echo "   2 $backend: $(tail -1 "$WORK/check.out")"
    NOTES+=("2 $backend: $(tail -1 "$WORK/check.out")")
  else
    cat "$WORK/check.out" >&2
    fail "2 $backend: stale pages after the writes stopped"
  fi
  check_pool "$ADDR" "writes $backend"
  stop_server "$SERVER_PID" "writes-$backend"
}

scenario_backpressure() { # BACKEND
  local backend=$1
  start_server "pressure-$backend" "$URL" --listen 127.0.0.1:0 --cache off \
    --pool-size 2 --pool-timeout-ms 1000 || return 0
  # wrk gives up on a request after 5 s: five times the pool timeout.
  LOAD_FRONT_PERCENT=20 wrk_run "5 pool 2, c64" "$backend" larder-off "$ADDR" pages.lua --timeout 5s
  check_pool "$ADDR" "back-pressure $backend"
  stop_server "$SERVER_PID" "pressure-$backend"
}

scenario_processes() { # BACKEND
  local backend=$1
  start_server "one-$backend" "$URL" --listen 127.0.0.1:0 || return 0
  local one=$ADDR one_pid=$SERVER_PID
  start_server "two-$backend" "$URL" --listen 127.0.0.1:0 || return 0
  local two=$ADDR two_pid=$SERVER_PID
  local line
  if line=$("$BIN" --url "$URL" probe-coherence --writer "$one" --reader "$two" --trials "$TRIALS" 2>&1); then
    NOTES+=("3 $backend idle: $line")
  else
    fail "3 $backend idle: $line"
  fi
  echo "   3 $backend idle: $line"
  LOAD_FRONT_PERCENT=10 wrk -t1 -c16 -d"$((DURATION + 5))s" --timeout 10s \
    -s scripts/wrk/pages.lua "$two" >/dev/null 2>&1 &
  local load=$!
  sleep 1
  if line=$("$BIN" --url "$URL" probe-coherence --writer "$one" --reader "$two" --trials "$TRIALS" 2>&1); then
    NOTES+=("3 $backend loaded: $line")
  else
    fail "3 $backend loaded: $line"
  fi
  echo "   3 $backend loaded: $line"
  wait "$load" || true
  check_pool "$one" "processes $backend one"
  check_pool "$two" "processes $backend two"
  stop_server "$one_pid" "one-$backend"
  stop_server "$two_pid" "two-$backend"

  # One port, two processes: the kernel spreads connections over both. The
  # first takes a port the kernel knows free (a random one was once in use:
  # "Address already in use" in CI), the second joins it.
  start_server "shared-a-$backend" "$URL" --listen "127.0.0.1:0" --reuse-port || return 0
  local a=$SERVER_PID port=${ADDR##*:}
  start_server "shared-b-$backend" "$URL" --listen "127.0.0.1:$port" --reuse-port || return 0
  local b=$SERVER_PID
  wrk_run "3 SO_REUSEPORT" "$backend" "2 processes" "http://127.0.0.1:$port" pages.lua
  stop_server "$a" "shared-a-$backend"
  stop_server "$b" "shared-b-$backend"
}

scenario_faults() { # postgres only
  start_server "faults" "$URL" --listen 127.0.0.1:0 --debug-routes || return 0
  warm "$ADDR"
  LOAD_FRONT_PERCENT=10 wrk -t2 -c64 -d"${FAULT_SECONDS}s" --timeout 10s \
    -s scripts/wrk/pages.lua "$ADDR" >"$WORK/faults.wrk" 2>&1 &
  local load=$! started=$SECONDS terminated=0 panics=0 restarted=0
  while kill -0 "$load" 2>/dev/null; do
    sleep 2
    kill -0 "$load" 2>/dev/null || break
    psql "$PG_ADMIN" -qAtc "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
      WHERE datname = 'larder_load' AND pid <> pg_backend_pid()" >/dev/null 2>&1 \
      && terminated=$((terminated + 1))
    curl -s -o /dev/null -X POST --max-time 10 "$ADDR/debug/panic-in-tx" && panics=$((panics + 1))
    if [ "$SHORT" = 0 ] && [ "$restarted" = 0 ] && [ $((SECONDS - started)) -ge $((FAULT_SECONDS / 2)) ]; then
      local restart="${PG_RESTART_CMD:-pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -1) main restart}"
      echo "   4: restarting PostgreSQL ($restart)"
      local down=$SECONDS
      $restart && restarted=1
      NOTES+=("4 postgres: server restarted, down for about $((SECONDS - down)) s")
    fi
  done
  wait "$load" || true
  local result
  result=$(grep '^RESULT' "$WORK/faults.wrk" || true)
  if [ -z "$result" ]; then
    cat "$WORK/faults.wrk" >&2
    fail "4: wrk gave no result"
  else
    read -r _ rps p50 p99 non2xx timeouts _ requests <<<"$result"
    local mode="terminations"
    [ "$restarted" = 1 ] && mode="+restart"
    ROWS+=("$(printf '%-16s %-9s %-12s %10s %9s %9s %8s %8s %8s' \
      "4 faults" postgres "$mode" "$rps" "$p50" "$p99" "$non2xx" "$timeouts" "$requests")")
    NOTES+=("4 postgres: $terminated terminations of every connection, $panics panics in a transaction, restart: $restarted; $non2xx of $requests requests non-2xx")
    [ "$timeouts" = 0 ] || fail "4: $timeouts requests timed out (a hang)"
    if [ "$restarted" = 0 ] && [ "$non2xx" != 0 ]; then
      grep "request failed" "$WORK/faults.err" | tail -20 >&2 || true
      fail "4: $non2xx failed requests while connections were terminated"
    fi
  fi
  sleep 1
  local health
  health=$(curl -s --max-time 10 "$ADDR/health" || true)
  [ "$health" = ok ] || fail "4: /health answered '$health' after the faults"
  check_pool "$ADDR" "faults"
  stop_server "$SERVER_PID" "faults"
}

want() { [[ ",$ONLY," == *,$1,* ]]; }

NOTES=()
IFS=, read -ra BACKEND_LIST <<<"$BACKENDS"
for backend in "${BACKEND_LIST[@]}"; do
  echo "== $backend"
  fresh_db "$backend"
  want 1 && scenario_reads "$backend"
  want 2 && scenario_writes "$backend"
  want 5 && scenario_backpressure "$backend"
  want 3 && scenario_processes "$backend"
  if [ "$backend" = postgres ] && want 4; then scenario_faults; fi
done

echo
echo "== results ($(nproc) cores, wrk -t2 -c64 -d${DURATION}s on loopback; seed $SEED)"
printf '%-16s %-9s %-12s %10s %9s %9s %8s %8s %8s\n' \
  scenario backend mode "req/s" "p50 ms" "p99 ms" non-2xx timeouts requests
for row in "${ROWS[@]}"; do echo "$row"; done
echo
for note in "${NOTES[@]}"; do echo "$note"; done
if [ ${#FAILURES[@]} -gt 0 ]; then
  echo
  echo "== ${#FAILURES[@]} failures"
  for f in "${FAILURES[@]}"; do echo "  $f"; done
  exit 1
fi
echo
echo "== no hang, no stale page, no leaked connection"
