#!/usr/bin/env bash
# A PgBouncer in transaction pooling mode on 127.0.0.1 in front of the PostgreSQL at UPSTREAM
# (a libpq URL of one host, such as DIR/primary.url of deploy/replica.sh).
#
#   UPSTREAM=postgresql://postgres@127.0.0.1:5432/postgres deploy/pgbouncer.sh start DIR
#                                 start it; writes DIR/pgbouncer.url (same user and database)
#   deploy/pgbouncer.sh stop DIR  stop it
#
# Port: PGBOUNCER_PORT, else a free one. Clients are trusted, as the upstream must trust
# PgBouncer's connections (no passwords are kept here).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start() {
    local dir=$1 run port host upstream_port user dbname parts binary
    [ -n "${UPSTREAM:-}" ] || die "set UPSTREAM to the PostgreSQL URL to pool"
    parts=$(parse_url "$UPSTREAM") || die "UPSTREAM is not a one-host postgresql:// URL"
    binary=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [ -x "$binary" ] || die "pgbouncer is not installed (apt-get install pgbouncer)"
    read -r host upstream_port user dbname <<<"$parts"
    # Else PgBouncer starts, and a client waits for it to give up on the upstream.
    upstream_answers "$host" "$upstream_port" "$user" "$dbname"
    begin_start pgbouncer.ini
    port=${PGBOUNCER_PORT:-$(free_port)}
    echo "\"$user\" \"\"" >"$run/pgbouncer.users"
    cat >"$run/pgbouncer.ini" <<INI
[databases]
* = host=$host port=$upstream_port
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $run/pgbouncer.users
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
logfile = $run/pgbouncer.log
pidfile = $run/pgbouncer.pid
INI
    say "starting PgBouncer on 127.0.0.1:$port in front of $host:$upstream_port"
    # PgBouncer refuses to run as root.
    as_pg "$binary" -d -q "$run/pgbouncer.ini" </dev/null >/dev/null 2>&1 ||
        die "PgBouncer did not start: see $(log_of "$dir" pgbouncer.log)"
    wait_for 30 pg_query "$port" -U "$user" -d "$dbname" -c "SELECT 1" ||
        die "PgBouncer does not answer: see $(log_of "$dir" pgbouncer.log)"
    echo "postgresql://$user@127.0.0.1:$port/$dbname" >"$dir/pgbouncer.url"
    say "ready: $(cat "$dir/pgbouncer.url")"
}

# Refuse, in one line, an upstream (host $1, port $2) that does not answer `SELECT 1` as user
# $3 on database $4 within a few seconds.
upstream_answers() {
    local error
    error=$(PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -w -q -t -A -h "$1" -p "$2" -U "$3" -d "$4" \
        -c "SELECT 1" 2>&1 >/dev/null) || {
        error=$(head -1 <<<"${error#psql: error: }")
        die "the upstream $1:$2 does not answer SELECT 1 (UPSTREAM=$UPSTREAM): $error"
    }
}

# Host, port, user and database of the one-host libpq URL $1, on one line.
parse_url() {
    "$PYTHON" - "$1" <<'PY'
import sys
from urllib.parse import unquote, urlsplit
url = urlsplit(sys.argv[1])
if url.scheme not in ("postgresql", "postgres") or "," in url.netloc:
    sys.exit(1)
print(url.hostname or "127.0.0.1", url.port or 5432, unquote(url.username or "postgres"),
      unquote(url.path.lstrip("/")) or "postgres")
PY
}

stop() {
    local dir=$1 run pid
    [ -e "$dir/run" ] || die "$dir holds no PgBouncer"
    run=$(readlink -f "$dir/run")
    refuse_other_script "$dir" "$run"
    for pid in $(pids_with_arg "$run/pgbouncer.ini"); do stop_pid "$pid" 30 PgBouncer; done
    drop_side_run_dir "$dir"
    rm -f "$dir/pgbouncer.url"
    say "stopped"
}

if [ $# -ne 2 ] || { [ "$1" != start ] && [ "$1" != stop ]; }; then
    die "usage: $0 start|stop DIR"
fi
"$1" "$2"
