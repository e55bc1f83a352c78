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

say() { printf '%s: %s\n' "${0##*/}" "$*"; }
die() {
    say "error: $*" >&2
    exit 1
}

# Run a command as the PostgreSQL user when root, as oneself otherwise.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid="$RUN_USER" --regid="$RUN_USER" --init-groups -- "$@"
    else
        "$@"
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

# From now on, should the script fail, stop what it started in DIR ($1) with its `stop`.
stop_on_failure() {
    trap "status=\$?; [ \$status -eq 0 ] || { say 'start failed: stopping what it started';
        (stop $(printf %q "$1")) || true; }" EXIT
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
