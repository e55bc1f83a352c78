#!/usr/bin/env bash
# A highly available PostgreSQL 15 on 127.0.0.1: one etcd and two Patroni nodes, a leader
# and a synchronous standby, with timings short enough for a failover drill.
#
#   deploy/patroni.sh start DIR   start etcd and the nodes, wait for a leader and a streaming
#                                 synchronous standby; writes DIR/database.url (both nodes,
#                                 target_session_attrs=read-write), DIR/nodes (name, pg port,
#                                 rest port per line) and DIR/<node>.yml (for patronictl -c)
#   deploy/patroni.sh stop DIR    stop the nodes (each stops its PostgreSQL), then etcd
#
# Ports: free ones on 127.0.0.1. Trust authentication on 127.0.0.1, for a single machine's
# tests and drills. DCS=etcd selects Patroni's etcd v2 client instead of etcd3.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES=(node1 node2)
DCS=${DCS:-etcd3}

start() {
    local dir=$1 run client peer node
    begin_start etcd
    cd "$run"
    client=$(free_port)
    peer=$(free_port)
    say "starting etcd on 127.0.0.1:$client"
    launch "$run/etcd.pid" "$run/etcd.log" etcd --name etcd --data-dir "$run/etcd" \
        --listen-client-urls "http://127.0.0.1:$client" \
        --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "etcd=http://127.0.0.1:$peer" \
        --initial-cluster-state new --enable-v2="$([ "$DCS" = etcd ] && echo true || echo false)"
    wait_for 30 etcdctl --endpoints "127.0.0.1:$client" endpoint health ||
        die "etcd is not healthy: see $(log_of "$dir" etcd.log)"

    : >"$dir/nodes"
    local hosts=()
    for node in "${NODES[@]}"; do
        local pg_port rest_port
        pg_port=$(free_port)
        rest_port=$(free_port)
        node_config "$run" "$node" "$client" "$pg_port" "$rest_port" >"$run/$node.yml"
        ln -sfn "$run/$node.yml" "$dir/$node.yml"
        echo "$node $pg_port $rest_port" >>"$dir/nodes"
        hosts+=("127.0.0.1:$pg_port")
        say "starting Patroni $node (PostgreSQL on 127.0.0.1:$pg_port, REST API on $rest_port)"
        launch "$run/$node.pid" "$run/$node.log" patroni "$run/$node.yml"
        # The first node bootstraps the cluster; the second copies it once it leads.
        [ "$node" != "${NODES[0]}" ] || wait_for 90 leads "$rest_port" ||
            die "$node did not become the leader: see $(log_of "$dir" "$node.log")"
    done

    say "waiting for a streaming synchronous standby"
    wait_for 120 synchronous "$dir" || die "no synchronous standby: see $(log_of "$dir" "*.log")"
    local joined
    joined=$(
        IFS=,
        echo "${hosts[*]}"
    )
    echo "postgresql://postgres@$joined/postgres?target_session_attrs=read-write" \
        >"$dir/database.url"
    say "ready: $(cat "$dir/database.url")"
}

# Start a command in the background, as the PostgreSQL user when root, in a session of its
# own; its pid goes to file $1 and its output to file $2.
launch() {
    local pid_file=$1 log=$2
    shift 2
    if [ "$(id -u)" -eq 0 ]; then
        setpriv --reuid="$RUN_USER" --regid="$RUN_USER" --init-groups -- setsid "$@" \
            </dev/null >"$log" 2>&1 {SCRIPT_OUT}>&- {SCRIPT_ERR}>&- &
    else
        setsid "$@" </dev/null >"$log" 2>&1 {SCRIPT_OUT}>&- {SCRIPT_ERR}>&- &
    fi
    echo $! >"$pid_file"
}

# The Patroni configuration of node $2 in run folder $1: etcd on port $3, PostgreSQL on $4,
# the REST API on $5.
node_config() {
    local run=$1 node=$2 etcd_port=$3 pg_port=$4 rest_port=$5
    cat <<EOF
scope: bank
name: $node
restapi:
  listen: 127.0.0.1:$rest_port
  connect_address: 127.0.0.1:$rest_port
$DCS:
  hosts: 127.0.0.1:$etcd_port
bootstrap:
  dcs:
    # loop_wait + 2 * retry_timeout <= ttl
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
    - encoding: UTF8
    - auth: trust
postgresql:
  listen: 127.0.0.1:$pg_port
  connect_address: 127.0.0.1:$pg_port
  data_dir: $run/$node
  bin_dir: $PG_BIN
  pgpass: $run/$node.pgpass
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
  parameters:
    unix_socket_directories: "$run"
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
EOF
}

# Succeeds once the Patroni REST API on port $1 says its node leads.
leads() {
    "$PYTHON" - "$1" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/patroni", timeout=2) as answer:
    state = json.load(answer)
sys.exit(0 if state.get("role") in ("master", "primary") and state.get("state") == "running" else 1)
EOF
}

# Succeeds once the cluster of DIR/nodes has a leader streaming to a standby that Patroni
# holds as its synchronous one (it may only fail over to that one).
synchronous() {
    "$PYTHON" - "$(awk 'NR == 1 {print $3}' "$1/nodes")" <<'EOF'
import json, sys, urllib.request
def get(url):
    with urllib.request.urlopen(url, timeout=2) as answer:
        return json.load(answer)
members = get(f"http://127.0.0.1:{sys.argv[1]}/cluster")["members"]
roles = {m["role"]: m for m in members}
leader, standby = roles.get("leader"), roles.get("sync_standby")
ok = leader is not None and standby is not None and any(
    r["application_name"] == standby["name"] and r["state"] == "streaming"
    and r["sync_state"] == "sync"
    for r in get(leader["api_url"]).get("replication", [])
)
sys.exit(0 if ok else 1)
EOF
}

stop() {
    local dir=$1 run node pid
    [ -e "$dir/run" ] || die "$dir holds no cluster"
    dir=$(cd "$dir" && pwd)
    run=$(readlink -f "$dir/run")
    refuse_other_script "$dir" "$run"
    cd /
    # All at once: each takes seconds to exit, and none takes over while the others stop.
    for node in "${NODES[@]}"; do
        for pid in $(patroni_pids "$dir" "$run" "$node"); do
            kill -TERM "$pid" 2>/dev/null || true
        done
    done
    for node in "${NODES[@]}"; do
        for pid in $(patroni_pids "$dir" "$run" "$node"); do
            stop_pid "$pid" 60 "Patroni $node"
        done
        # A node killed outright leaves its PostgreSQL behind.
        pid=$(postmaster_of "$run/$node")
        if [ -n "$pid" ]; then
            say "stopping the PostgreSQL of $node (pid $pid)"
            as_pg "$PG_BIN/pg_ctl" -D "$run/$node" -m immediate -w -t 30 stop >/dev/null || true
        fi
    done
    for pid in $(pids_with_arg "$run/etcd"); do stop_pid "$pid" 30 etcd; done
    wait_for 30 no_leftovers "$run" || {
        say "killing what is left: $(leftovers "$run" | tr '\n' ' ')"
        leftovers "$run" | xargs -r kill -KILL 2>/dev/null || true
        wait_for 10 no_leftovers "$run" || die "still running: $(leftovers "$run" | tr '\n' ' ')"
    }
    drop_side_run_dir "$dir"
    rm -f "$dir/database.url" "$dir/nodes"
    for node in "${NODES[@]}"; do rm -f "$dir/$node.yml"; done
    say "stopped"
}

# The pids of the Patroni processes of node $3 of DIR $1 (run folder $2), found by their
# command line, `patroni CONFIG`: pid files go stale once a node is killed or restarted by
# hand (through DIR's link to its configuration, or the run folder's).
patroni_pids() {
    local pid
    for pid in $(pids_with_arg "$2/$3.yml" "$1/$3.yml"); do
        if tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qx '\(.*/\)\?patroni'; then
            echo "$pid"
        fi
    done
}

# The pids of processes working in run folder $1: every PostgreSQL process works in its data
# folder, and etcd and Patroni were started there.
leftovers() {
    find /proc/[0-9]*/cwd -maxdepth 0 \( -lname "$1" -o -lname "$1/*" \) 2>/dev/null |
        cut -d/ -f3
}

no_leftovers() { [ -z "$(leftovers "$1")" ]; }

if [ $# -ne 2 ] || { [ "$1" != start ] && [ "$1" != stop ]; }; then
    die "usage: $0 start|stop DIR"
fi
"$1" "$2"
