#!/usr/bin/env bash
# The services kuant's tests talk to, started by the project itself: PostgreSQL on
# 127.0.0.1:5432, user `postgres`, trust auth on loopback only, database `test`, which is the URL
# the tests use by default (postgres://postgres@127.0.0.1:5432/test).
#
#   scripts/dev-services.sh [start]   install PostgreSQL from Debian's packages when it is missing,
#                                     then start it, or reuse the server already answering there
#   scripts/dev-services.sh status    say whether it answers
#   scripts/dev-services.sh stop      stop the server this script started (and nothing else)
#
# Idempotent: a second `start` is a no-op. The data directory is the script's own (never Debian's
# `main` cluster), so it does not touch a PostgreSQL you run for something else:
#   as root:  /var/lib/postgresql/kuant-test/<major>   (the server runs as the `postgres` user,
#             since PostgreSQL refuses to run as root)
#   else:     ${XDG_CACHE_HOME:-~/.cache}/kuant/postgres-<major>
# KUANT_PGDATA overrides the directory, KUANT_PG_PORT the port (5432). The server is tuned for
# tests (fsync off): never point KUANT_PGDATA at data you care about.
set -euo pipefail

PORT=${KUANT_PG_PORT:-5432}
HOST=127.0.0.1
DB=test
USER_NAME=postgres

say() { printf 'dev-services: %s\n' "$*"; }
die() { printf 'dev-services: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# Runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "installing PostgreSQL needs root (or sudo): run 'apt-get install postgresql' as root, then this script again"
  fi
}

# The newest installed server's bin directory, or nothing.
pg_bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return; fi
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
  fi
}

install_postgresql() {
  command -v apt-get >/dev/null || die "no PostgreSQL server and no apt-get to install one: install PostgreSQL 13 or newer"
  say "installing PostgreSQL from Debian's packages"
  if ! dpkg -s postgresql-common >/dev/null 2>&1; then
    # Debian's package would create (and, where services may start, start) its own `main`
    # cluster on port 5432, which is not set up for trust auth; the tests use our own directory.
    as_root mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confold postgresql postgresql-client >/dev/null
}

answers() { "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" -U "$USER_NAME" -d postgres -t 2; }

# Runs a command as the user that owns the data directory.
as_owner() {
  if is_root; then runuser -u "$USER_NAME" -- "$@"; else "$@"; fi
}

psql_admin() { "$BIN/psql" -X -q -h "$HOST" -p "$PORT" -U "$USER_NAME" -d postgres -v ON_ERROR_STOP=1 "$@"; }

ensure_database() {
  local exists
  exists=$(psql_admin -Atc "SELECT 1 FROM pg_database WHERE datname = '$DB'") ||
    die "the server on $HOST:$PORT refuses user '$USER_NAME' without a password: the tests need trust auth on loopback (or set KUANT_TEST_DATABASE_URL and KUANT_TEST_PG to a server they may use)"
  if [ "$exists" != 1 ]; then
    psql_admin -c "CREATE DATABASE $DB"
    say "created database $DB"
  fi
}

# A postmaster.pid whose process is gone (or is now some other program) is stale: PostgreSQL
# would refuse to start while it names a live process, so it goes.
clear_stale_pid_file() {
  local pidfile=$PGDATA/postmaster.pid pid comm
  [ -f "$pidfile" ] || return 0
  pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    if [ "$comm" = postgres ] || [ "$comm" = postmaster ]; then
      # Our server is alive but not answering yet (starting up or shutting down): let it finish.
      say "a server (pid $pid) already runs on $PGDATA; waiting for it"
      "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" -U "$USER_NAME" -d postgres -t 60 && return 0
      die "PostgreSQL pid $pid holds $PGDATA but does not answer on $HOST:$PORT; see $LOG"
    fi
  fi
  say "removing stale pid file $pidfile (pid ${pid:-?} is not a running PostgreSQL)"
  rm -f "$pidfile"
}

init_cluster() {
  say "initialising $PGDATA"
  if is_root; then
    id "$USER_NAME" >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash "$USER_NAME"
    mkdir -p "$PGDATA"
    chown "$USER_NAME:" "$PGDATA"
  else
    mkdir -p "$PGDATA"
  fi
  chmod 700 "$PGDATA"
  as_owner "$BIN/initdb" -D "$PGDATA" -U "$USER_NAME" --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
  # Loopback only, trust only there. Test settings: durability off (a crash may lose the test
  # data, which a re-run recreates), room for the parallel test binaries' connection pools.
  as_owner tee "$PGDATA/pg_hba.conf" >/dev/null <<'EOF'
# kuant test server: trust on loopback only; nothing else may connect.
local   all  all                 trust
host    all  all  127.0.0.1/32   trust
host    all  all  ::1/128        trust
EOF
  as_owner tee -a "$PGDATA/postgresql.conf" >/dev/null <<EOF

# --- kuant test server (scripts/dev-services.sh) ---
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$PGDATA'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

start() {
  if [ -z "$(pg_bindir)" ]; then
    install_postgresql
    [ -n "$(pg_bindir)" ] || die "PostgreSQL was installed but no pg_ctl was found under /usr/lib/postgresql"
  fi
  BIN=$(pg_bindir)
  PGDATA=$(data_dir)
  LOG=$PGDATA.log
  if answers; then
    say "PostgreSQL already answers on $HOST:$PORT; reusing it"
    ensure_database
    say "ready: postgres://$USER_NAME@$HOST:$PORT/$DB"
    return
  fi
  [ -f "$PGDATA/PG_VERSION" ] || init_cluster
  clear_stale_pid_file
  if is_root; then touch "$LOG" && chown "$USER_NAME:" "$LOG"; fi
  if ! answers; then
    say "starting PostgreSQL $(cat "$PGDATA/PG_VERSION") on $HOST:$PORT ($PGDATA)"
    if ! as_owner "$BIN/pg_ctl" -D "$PGDATA" -l "$LOG" -w -t 60 -s start; then
      tail -n 20 "$LOG" >&2 || true
      die "PostgreSQL did not start (log above, in $LOG)"
    fi
  fi
  "$BIN/pg_isready" -q -h "$HOST" -p "$PORT" -U "$USER_NAME" -d postgres -t 30 || die "PostgreSQL started but does not answer on $HOST:$PORT; see $LOG"
  ensure_database
  say "ready: postgres://$USER_NAME@$HOST:$PORT/$DB"
}

stop() {
  BIN=$(pg_bindir)
  [ -n "$BIN" ] || { say "no PostgreSQL installed"; return; }
  PGDATA=$(data_dir)
  if [ -f "$PGDATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_owner "$BIN/pg_ctl" -D "$PGDATA" -m fast -w -s stop
    say "stopped the server on $PGDATA"
  else
    say "no server of ours runs on $PGDATA"
  fi
}

status() {
  BIN=$(pg_bindir)
  [ -n "$BIN" ] || { say "PostgreSQL is not installed"; exit 1; }
  if answers; then say "PostgreSQL answers on $HOST:$PORT"; else say "nothing answers on $HOST:$PORT"; exit 1; fi
}

major() {
  local bin
  bin=$(pg_bindir)
  "$bin/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/'
}

data_dir() {
  if [ -n "${KUANT_PGDATA:-}" ]; then echo "$KUANT_PGDATA"
  elif is_root; then echo "/var/lib/postgresql/kuant-test/$(major)"
  else echo "${XDG_CACHE_HOME:-$HOME/.cache}/kuant/postgres-$(major)"
  fi
}

cmd=${1:-start}
case $cmd in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 [start|status|stop]" ;;
esac
