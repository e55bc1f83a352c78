# Helpers shared by the deploy scripts; sourced, not run.
#
# As root, PostgreSQL and its companions run as the `postgres` user (PostgreSQL refuses to run
# as root). Their data then lives in a folder that user can reach: DIR itself when it can, else
# a private folder under /tmp that DIR/run points to (DIR may sit under a root-only folder).

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
RUN_USER=${RUN_USER:-postgres}
# The system's Python when there is one: a version manager's shim costs a fraction of a
# second per call, and the scripts call it in loops.
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}

# The running script's name: recorded in the run folder it starts, and in its messages.
SCRIPT=${0##*/}

# The script's own output, for the messages of an interrupted start: a trap may run while a
# function's output goes to a log. Daemons must not hold it open (as_pg and launch close it).
exec {SCRIPT_OUT}>&1 {SCRIPT_ERR}>&2

say() { printf '%s: %s\n' "$SCRIPT" "$*"; }
die() {
    say "error: $*" >&2
    exit 1
}

# Run a command as the PostgreSQL user when root, as oneself otherwise.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid="$RUN_USER" --regid="$RUN_USER" --init-groups -- "$@" \
            {SCRIPT_OUT}>&- {SCRIPT_ERR}>&-
    else
        "$@" {SCRIPT_OUT}>&- {SCRIPT_ERR}>&-
    fi
}

# A free TCP port on 127.0.0.1.
free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The folder of the running services of DIR, made on first use; prints its path.
run_dir() {
    local dir=$1
    if [ -L "$dir/run" ] || [ -d "$dir/run" ]; then
        readlink -f "$dir/run"
        return
    fi
    if [ "$(id -u)" -eq 0 ] && ! as_pg test -w "$dir" -a -x "$dir" 2>/dev/null; then
        local side
        side=$(mktemp -d /tmp/bank-graphql-deploy.XXXXXX)
        chown "$RUN_USER:" "$side"
        ln -s "$side" "$dir/run"
    else
        mkdir -m 700 "$dir/run"
        [ "$(id -u)" -eq 0 ] && chown "$RUN_USER:" "$dir/run"
    fi
    readlink -f "$dir/run"
}

# Forget DIR's run folder when it lives outside DIR (its data goes with it, its logs are kept
# in DIR/logs).
drop_side_run_dir() {
    local dir=$1 run
    if [ -L "$dir/run" ]; then
        run=$(readlink -f "$dir/run")
        mkdir -p "$dir/logs"
        cp -- "$run"/*.log "$dir/logs/" 2>/dev/null || true
        rm -rf -- "$run"
        say "logs kept in $dir/logs"
        rm -f -- "$dir/run"
    fi
}

# From now on, should the script fail or be interrupted (Ctrl-C, SIGTERM), stop what it
# started in DIR ($1) with its `stop`, then exit non-zero.
stop_on_failure() {
    STARTED_DIR=$1
    trap 'interrupted SIGINT 130' INT
    trap 'interrupted SIGTERM 143' TERM
    trap undo_start EXIT
}

interrupted() {
    exec >&"$SCRIPT_OUT" 2>&"$SCRIPT_ERR"
    say "interrupted ($1)" >&2
    exit "$2"
}

undo_start() {
    local status=$?
    [ "$status" -ne 0 ] || return 0
    exec >&"$SCRIPT_OUT" 2>&"$SCRIPT_ERR"
    # A second Ctrl-C must not cut the stop short: what it has not stopped would stay behind.
    trap '' INT TERM
    # The stop waits for every process working in the run folder: this shell is none.
    cd /
    say "start failed: stopping what it started"
    (stop "$STARTED_DIR") || true
    exit "$status"
}

# The script that made the cluster of run folder $1: recorded by its `start` (guessed from
# the folder for clusters started before the scripts recorded it); empty when none did.
made_by() {
    local run=$1
    if [ -f "$run/made-by" ]; then
        cat "$run/made-by"
    elif [ -e "$run/etcd" ]; then
        echo patroni.sh
    elif [ -e "$run/primary" ]; then
        echo replica.sh
    elif [ -e "$run/pgbouncer.ini" ]; then
        echo pgbouncer.sh
    fi
}

# Refuse DIR ($1, run folder $2) when another script made its cluster: its stop would
# destroy that cluster, its start mix two clusters in one folder.
refuse_other_script() {
    local dir=$1 run=$2 owner
    owner=$(made_by "$run")
    [ -z "$owner" ] || [ "$owner" = "$SCRIPT" ] ||
        die "$dir holds a cluster of deploy/$owner, not of deploy/$SCRIPT (one DIR per script)"
}

# Record that this script makes the cluster of run folder $1.
claim() { echo "$SCRIPT" >"$1/made-by"; }

# The first steps of every start, on the caller's `dir` and `run`: DIR made absolute, its run
# folder made, a DIR of another script or one already started ($1 exists in the run folder)
# refused, the DIR claimed, and what the start makes stopped if it fails or is interrupted.
begin_start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    run=$(run_dir "$dir")
    refuse_other_script "$dir" "$run"
    [ ! -e "$run/$1" ] || die "$dir already holds a cluster (running or stopped): use a new DIR"
    claim "$run"
    stop_on_failure "$dir"
}

# Where the log named $2 of DIR $1 is once a failed start has stopped: DIR/logs when the
# run folder lives outside DIR (stop deletes it), else DIR/run.
log_of() {
    if [ -L "$1/run" ]; then echo "$1/logs/$2"; else echo "$1/run/$2"; fi
}

# The pids of the processes with one of $@ as a whole argument: how stop tells the processes
# of a DIR from unrelated ones that reused the pid in a stale pid file.
pids_with_arg() {
    grep -lzxF -f <(printf '%s\n' "$@") /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true
}

# The pid of the PostgreSQL running on data folder $1, if one does: the pid of its
# postmaster.pid, if that process still works in the folder (a crash leaves the file behind).
postmaster_of() {
    local pid
    pid=$(head -1 "$1/postmaster.pid" 2>/dev/null) || return 0
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$1" ]; then
        echo "$pid"
    fi
}

# Wait up to $1 seconds for the command that follows to succeed.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Wait up to $2 seconds for process $1 to exit.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# Stop process $1 (SIGTERM, then SIGKILL after $2 seconds); say so under the name $3.
stop_pid() {
    local pid=$1 seconds=$2 name=$3
    kill -0 "$pid" 2>/dev/null || return 0
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$seconds"; then
        say "$name did not stop within ${seconds}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || true
    fi
}

# psql as the postgres role over TCP on port $1; the remaining arguments go to psql.
pg_query() {
    local port=$1
    shift
    "$PG_BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}
