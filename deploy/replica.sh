#!/usr/bin/env bash
# A primary PostgreSQL 15 and a streaming standby copied from it, on 127.0.0.1.
#
#   deploy/replica.sh start DIR   initdb, start the primary, pg_basebackup the standby, start
#                                 it, wait until it streams; writes DIR/primary.url and
#                                 DIR/standby.url
#   deploy/replica.sh stop DIR    stop both (fast shutdown)
#
# Ports: PRIMARY_PORT and STANDBY_PORT, else free ones. Trust authentication on 127.0.0.1:
# for a single machine's tests and drills, not for anything reachable from elsewhere.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start() {
    local dir=$1 run primary_port standby_port
    begin_start primary
    primary_port=${PRIMARY_PORT:-$(free_port)}
    standby_port=${STANDBY_PORT:-$(free_port)}
    [ "$primary_port" != "$standby_port" ] || standby_port=$(free_port)

    say "initdb of the primary in $run/primary"
    as_pg "$PG_BIN/initdb" -D "$run/primary" -U postgres --auth=trust -E UTF8 --no-instructions \
        >"$run/initdb.log" 2>&1 || die "initdb failed: see $(log_of "$dir" initdb.log)"
    cat >>"$run/primary/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $primary_port
unix_socket_directories = '$run'
wal_level = replica
max_wal_senders = 10
hot_standby = on
cluster_name = 'primary'
EOF
    cat >"$run/primary/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
EOF
    say "starting the primary on 127.0.0.1:$primary_port"
    as_pg "$PG_BIN/pg_ctl" -D "$run/primary" -l "$run/primary.log" -w -t 60 start >/dev/null ||
        die "the primary did not start: see $(log_of "$dir" primary.log)"

    say "copying the standby with pg_basebackup"
    as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
        -D "$run/standby" -R -X stream -c fast >"$run/basebackup.log" 2>&1 ||
        die "pg_basebackup failed: see $(log_of "$dir" basebackup.log)"
    cat >>"$run/standby/postgresql.conf" <<EOF
port = $standby_port
cluster_name = 'standby'
# Long reads of history are not cancelled by the vacuum of rows they still see.
hot_standby_feedback = on
EOF
    say "starting the standby on 127.0.0.1:$standby_port"
    as_pg "$PG_BIN/pg_ctl" -D "$run/standby" -l "$run/standby.log" -w -t 60 start >/dev/null ||
        die "the standby did not start: see $(log_of "$dir" standby.log)"

    say "waiting for the standby to stream"
    wait_for 60 streaming "$primary_port" ||
        die "the standby does not stream: see $(log_of "$dir" "*.log")"
    echo "postgresql://postgres@127.0.0.1:$primary_port/postgres" >"$dir/primary.url"
    echo "postgresql://postgres@127.0.0.1:$standby_port/postgres" >"$dir/standby.url"
    say "ready: $(cat "$dir/primary.url") (primary), $(cat "$dir/standby.url") (standby)"
}

# Succeeds once the primary on port $1 streams to a standby.
streaming() {
    [ "$(pg_query "$1" -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" -ge 1 ]
}

stop() {
    local dir=$1 run node
    [ -e "$dir/run" ] || die "$dir holds no cluster"
    run=$(readlink -f "$dir/run")
    refuse_other_script "$dir" "$run"
    for node in standby primary; do
        if [ -n "$(postmaster_of "$run/$node")" ]; then
            say "stopping the $node"
            as_pg "$PG_BIN/pg_ctl" -D "$run/$node" -m fast -w -t 60 stop >/dev/null ||
                as_pg "$PG_BIN/pg_ctl" -D "$run/$node" -m immediate -w -t 30 stop >/dev/null ||
                say "the $node did not stop: see $(log_of "$dir" "$node.log")"
        fi
    done
    drop_side_run_dir "$dir"
    rm -f "$dir/primary.url" "$dir/standby.url"
    say "stopped"
}

if [ $# -ne 2 ] || { [ "$1" != start ] && [ "$1" != stop ]; }; then
    die "usage: $0 start|stop DIR"
fi
"$1" "$2"
