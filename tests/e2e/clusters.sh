#!/usr/bin/env bash
# Starts real member clusters on loopback: one etcd, and per cluster a kube-apiserver (its own
# etcd prefix) and a kube-controller-manager (DESIGN section 4). Writes a kubeconfig with one
# context per cluster and supervises them until told to stop.
#
#   clusters.sh up [--hub] [--state DIR] (N | NAME...)   run in the foreground (tests use this)
#   clusters.sh up --etcd-per-cluster ...                each cluster gets its own etcd
#   clusters.sh up --detach [--hub] [--state DIR] (N | NAME...)   start in the background (humans)
#   clusters.sh down [--state DIR]                       stop a detached set
#
# Kubernetes version: FLOTILLA_KUBE selects the lane. `current` (the default) is the newest
# release, built from Go modules with etcd 3.6 (build-kube-current.sh); `1.20` is the
# compatibility lane, built from Debian's source, with Debian's etcd 3.4 (build-kube.sh).
# Either way the lane's kubectl is linked as STATE/bin/kubectl. On the current lane each cluster
# also runs a kube-scheduler and kwok (the SIG's kubelet simulator) with three Nodes of
# 8 cpu, 32Gi and 110 pods: pods are scheduled, become Running and Ready, and Deployments,
# StatefulSets and Jobs finish for real. A container whose image tag is `broken` crash-loops
# (tests/e2e/kwok/broken-images.yaml).
#
# In the foreground, the supervisor prints `ready KUBECONFIG` once every apiserver answers
# /readyz, then reads commands from stdin: `stop NAME` and `start NAME` answer `ok NAME`.
# With --etcd-per-cluster (the fault tests: one cluster's storage fails, the others' does not),
# `stop-etcd NAME` kills that cluster's etcd only and `start-etcd NAME` starts it again on its
# data and waits until the apiserver is ready again.
# When stdin closes (the test process ended, even by a panic or SIGKILL), or on SIGTERM/SIGINT,
# everything is stopped and the state directory removed. Every child also gets
# PR_SET_PDEATHSIG=KILL, so nothing outlives a supervisor that was itself killed.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
default_state="${XDG_CACHE_HOME:-$HOME/.cache}/flotilla/clusters"
admin_token="flotilla-admin-token"
marker=".flotilla-clusters"

die() { echo "clusters.sh: $*" >&2; exit 2; }
log() { echo "clusters.sh: $*" >&2; }

free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Runs a child that dies with this shell (so never from a subshell), its output in a log
# file and its pid in a pid file.
spawn() {
    local log_file="$1" pid_file="$2"; shift 2
    setpriv --pdeathsig KILL -- "$@" >"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
}

start_apiserver() {
    local name="$1" port dir
    port="$(cat "$state/$name/port")"
    dir="$state/$name"
    mkdir -p "$dir/certs"
    spawn "$dir/apiserver.log" "$dir/apiserver.pid" "$bin/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$(etcd_port_of "$name")" --etcd-prefix="/$name" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
        --secure-port="$port" "${apiserver_lane_flags[@]}" --cert-dir="$dir/certs" \
        --token-auth-file="$state/tokens.csv" --authorization-mode=RBAC \
        --service-account-key-file="$state/sa.pub" \
        --service-account-signing-key-file="$state/sa.key" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --api-audiences=https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range=10.0.0.0/20 --endpoint-reconciler-type=none \
        --allow-privileged=true
}

# The etcd a cluster's apiserver uses: its own with --etcd-per-cluster, else the shared one.
etcd_port_of() {
    if [ -f "$state/$1/etcd-port" ]; then cat "$state/$1/etcd-port"; else echo "$etcd_port"; fi
}

# Starts an etcd on the ports in DIR/etcd-port and DIR/etcd-peer-port, keeping its data in
# DATA (the same data again after a stop: nothing is lost), logging to DIR/etcd.log.
start_etcd() {
    local dir="$1" data="$2" port peer
    port="$(cat "$dir/etcd-port")"
    peer="$(cat "$dir/etcd-peer-port")"
    spawn "$dir/etcd.log" "$dir/etcd.pid" "$etcd" --data-dir "$data" \
        --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "default=http://127.0.0.1:$peer" --quota-backend-bytes 4294967296
}

# Kills one cluster's own etcd (as a crash would: no clean shutdown).
stop_etcd() {
    local name="$1" pid
    pid="$(cat "$state/$name/etcd.pid" 2>/dev/null || true)"
    # In a group, so that bash's "Killed" notice goes where the wait's stderr goes.
    {
        [ -n "$pid" ] && kill -KILL "$pid" || true
        [ -n "$pid" ] && wait "$pid" || true
    } 2>/dev/null
    rm -f "$state/$name/etcd.pid"
}

# Starts one cluster's own etcd again and waits until its apiserver is ready on it.
start_etcd_again() {
    start_etcd "$state/$1" "$etcd_dir/$1"
    wait_answering "$1" etcd "http://127.0.0.1:$(cat "$state/$1/etcd-port")/health"
    wait_ready "$1"
}

start_controller_manager() {
    local name="$1" dir="$state/$1"
    spawn "$dir/controller-manager.log" "$dir/controller-manager.pid" "$bin/kube-controller-manager" \
        --kubeconfig="$dir/admin.kubeconfig" --leader-elect=false \
        --controllers=namespace,garbagecollector,deployment,replicaset,statefulset,daemonset,job,horizontalpodautoscaling,serviceaccount,serviceaccount-token \
        --service-account-private-key-file="$state/sa.key" \
        --root-ca-file="$dir/certs/apiserver.crt" \
        "${controller_manager_lane_flags[@]}" --secure-port=0
}

# Waits until the component of cluster NAME (apiserver, etcd) answers URL (curl with ARGS),
# for up to 90 s; shows its log and fails if it exits meanwhile.
wait_answering() {
    local name="$1" component="$2" url="$3" deadline
    shift 3
    deadline=$((SECONDS + 90))
    until curl -sf -m 2 "$@" "$url" >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$state/$name/$component.pid")" 2>/dev/null; then
            tail -20 "$state/$name/$component.log" >&2
            die "the $component of $name exited"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "the $component of $name is not ready after 90 s"
        sleep 0.2
    done
}

wait_ready() {
    wait_answering "$1" apiserver "https://127.0.0.1:$(cat "$state/$1/port")/readyz" \
        -k -H "Authorization: Bearer $admin_token"
}

stop_cluster() {
    local name="$1" pid
    for component in kwok scheduler controller-manager apiserver; do
        pid="$(cat "$state/$name/$component.pid" 2>/dev/null || true)"
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
        rm -f "$state/$name/$component.pid"
    done
}

# The scheduler and kwok, on the current lane: simulated nodes where pods really run.
start_nodes() {
    local name="$1" dir="$state/$1"
    [ -n "$kwok_dir" ] || return 0
    spawn "$dir/scheduler.log" "$dir/scheduler.pid" "$bin/kube-scheduler" \
        --kubeconfig="$dir/admin.kubeconfig" --leader-elect=false --secure-port=0
    spawn "$dir/kwok.log" "$dir/kwok.pid" "$kwok_dir/kwok" \
        --kubeconfig="$dir/admin.kubeconfig" --config="$state/kwok-stages.yaml" \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
}

# Three simulated Nodes with real allocatable resources (once per cluster; they live in etcd).
create_nodes() {
    local name="$1" i
    [ -n "$kwok_dir" ] || return 0
    for i in 1 2 3; do
        printf '%s\n' "apiVersion: v1" "kind: Node" "metadata:" "  name: $name-node-$i" \
            "  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\"}" \
            "  labels: {kubernetes.io/hostname: $name-node-$i, kubernetes.io/os: linux, type: kwok}" \
            "status:" \
            "  allocatable: {cpu: \"8\", memory: 32Gi, pods: \"110\"}" \
            "  capacity: {cpu: \"8\", memory: 32Gi, pods: \"110\"}" "---"
    done | "$kubectl" --kubeconfig "$state/$name/admin.kubeconfig" apply -f - >/dev/null
    # The apiserver taints a new Node not-ready; the node lifecycle controller, which would
    # lift it once kwok reports Ready, is not run here.
    "$kubectl" --kubeconfig "$state/$name/admin.kubeconfig" taint nodes -l type=kwok \
        node.kubernetes.io/not-ready:NoSchedule- >/dev/null
}

start_cluster() {
    start_apiserver "$1"
    wait_ready "$1"
    start_controller_manager "$1"
    start_nodes "$1"
}

write_kubeconfigs() {
    local kubeconfig="$state/kubeconfig" name port ca
    {
        echo "apiVersion: v1"
        echo "kind: Config"
        echo "current-context: ${names[0]}"
        echo "clusters:"
        for name in "${names[@]}"; do
            port="$(cat "$state/$name/port")"
            ca="$(base64 -w0 <"$state/$name/certs/apiserver.crt")"
            printf -- '- name: %s\n  cluster:\n    server: https://127.0.0.1:%s\n    certificate-authority-data: %s\n' "$name" "$port" "$ca"
        done
        echo "users:"
        echo "- name: admin"
        echo "  user:"
        echo "    token: $admin_token"
        echo "contexts:"
        for name in "${names[@]}"; do
            printf -- '- name: %s\n  context:\n    cluster: %s\n    user: admin\n' "$name" "$name"
        done
    } >"$kubeconfig.tmp"
    mv "$kubeconfig.tmp" "$kubeconfig"
    for name in "${names[@]}"; do
        port="$(cat "$state/$name/port")"
        cat >"$state/$name/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
current-context: admin
clusters:
- name: $name
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $state/$name/certs/apiserver.crt
users:
- name: admin
  user:
    token: $admin_token
contexts:
- name: admin
  context:
    cluster: $name
    user: admin
EOF
    done
}

# Sets bin (the control plane's directory), etcd, kubectl and the flags only one lane has.
select_lane() {
    case "${FLOTILLA_KUBE:-current}" in
        current)
            local KUBE_DIR ETCD_DIR KWOK_DIR
            eval "$("$here/build-kube-current.sh")"
            bin="$KUBE_DIR"
            kwok_dir="$KWOK_DIR"
            [ -n "$kwok_dir" ] || log "kwok did not build: no simulated nodes, pods stay Pending"
            if [ -n "$kwok_dir" ]; then
                for stage in "$kwok_dir"/stages/*.yaml "$here/kwok/broken-images.yaml"; do
                    echo "---"
                    cat "$stage"
                done >"$state/kwok-stages.yaml"
            fi
            etcd="$ETCD_DIR/etcd"
            kubectl="$KUBE_DIR/kubectl"
            apiserver_lane_flags=()
            controller_manager_lane_flags=()
            ;;
        1.20)
            bin="$("$here/build-kube.sh")"
            kwok_dir=""
            etcd="$(command -v etcd)" || die "Debian's etcd (etcd-server) is not installed"
            kubectl="$(command -v kubectl)" || die "no kubectl on PATH for the 1.20 lane"
            # Both flags are gone from current releases (1.24).
            apiserver_lane_flags=(--insecure-port=0)
            controller_manager_lane_flags=(--port=0)
            ;;
        *) die "FLOTILLA_KUBE must be current or 1.20, not ${FLOTILLA_KUBE}" ;;
    esac
    mkdir -p "$state/bin"
    ln -sf "$kubectl" "$state/bin/kubectl"
    log "Kubernetes $("$bin/kube-apiserver" --version | awk '{print $2}') (lane ${FLOTILLA_KUBE:-current})"
}

cleanup() {
    trap - EXIT INT TERM
    [ -f "$state/$marker" ] || return 0
    for name in "${names[@]}"; do stop_cluster "$name"; done
    # Whatever the pid files say, no child of this supervisor outlives it. (In a group so that
    # bash's "Killed" notices of the reaped children go where the wait's stderr goes.)
    {
        [ -n "${etcd_pid:-}" ] && kill -KILL "$etcd_pid" || true
        pkill -KILL -P $$ || true
        wait || true
    } 2>/dev/null
    rm -rf "$state" "${etcd_dir:-}"
}

cmd_up() {
    local hub=false detach=false etcd_per_cluster=false
    names=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --hub) hub=true ;;
            --detach) detach=true ;;
            --etcd-per-cluster) etcd_per_cluster=true ;;
            --state) state="$2"; shift ;;
            [0-9]*) for i in $(seq 1 "$1"); do names+=("cluster-$i"); done ;;
            -*) die "unknown option $1" ;;
            *) names+=("$1") ;;
        esac
        shift
    done
    [ "${#names[@]}" -gt 0 ] || die "name a number of clusters or their names"
    $hub && names=(hub "${names[@]}")
    state="${state:-$default_state}"

    if $detach; then
        [ ! -e "$state/supervisor.pid" ] || die "clusters are already up in $state (clusters.sh down first)"
        mkdir -p "$(dirname "$state")"
        local ready_file fifo
        ready_file="$(mktemp)"
        # The supervisor's stdin is a pipe from `sleep infinity`; `down` stops both.
        local options=()
        $etcd_per_cluster && options=(--etcd-per-cluster)
        nohup bash -c 'sleep infinity | "$0" up --state "$1" "${@:2}"' "$0" "$state" "${options[@]}" "${names[@]}" \
            >"$ready_file" 2>"$ready_file.log" &
        until grep -q '^ready ' "$ready_file"; do
            if ! kill -0 $! 2>/dev/null; then cat "$ready_file.log" >&2; die "the clusters did not start"; fi
            sleep 0.5
        done
        echo $! >"$state/supervisor.pid"
        echo "export KUBECONFIG=$(sed -n 's/^ready //p' "$ready_file")"
        rm -f "$ready_file" "$ready_file.log"
        return
    fi

    # The state directory is removed at the end: never take over one this script did not make.
    if [ -e "$state" ]; then
        [ -f "$state/$marker" ] || die "$state exists and was not made by clusters.sh; pick another --state"
        owner="$(cat "$state/owner.pid" 2>/dev/null || true)"
        if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
            die "clusters are already up in $state (supervisor $owner)"
        fi
        rm -rf "$state"
    fi
    mkdir -p "$state"
    touch "$state/$marker"
    echo $$ >"$state/owner.pid"
    select_lane
    trap cleanup EXIT
    trap 'cleanup; exit 130' INT
    trap 'cleanup; exit 143' TERM

    echo "$admin_token,admin,admin,system:masters" >"$state/tokens.csv"
    openssl genrsa -out "$state/sa.key" 2048 2>/dev/null
    openssl rsa -in "$state/sa.key" -pubout -out "$state/sa.pub" 2>/dev/null

    local ports i=0
    read -r -a ports <<<"$(free_ports $((${#names[@]} * 3 + 2)))"
    # etcd's data is throwaway: keep it in memory when /dev/shm exists.
    etcd_dir="$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo "$state")/flotilla-etcd.XXXXXX")"
    if $etcd_per_cluster; then
        etcd_port=""
    else
        etcd_port="${ports[0]}"
        echo "$etcd_port" >"$state/etcd-port"
        echo "${ports[1]}" >"$state/etcd-peer-port"
        start_etcd "$state" "$etcd_dir"
        etcd_pid="$(cat "$state/etcd.pid")"
    fi
    for name in "${names[@]}"; do
        mkdir -p "$state/$name"
        echo "${ports[$((i * 3 + 2))]}" >"$state/$name/port"
        if $etcd_per_cluster; then
            echo "${ports[$((i * 3 + 3))]}" >"$state/$name/etcd-port"
            echo "${ports[$((i * 3 + 4))]}" >"$state/$name/etcd-peer-port"
            start_etcd "$state/$name" "$etcd_dir/$name"
        fi
        i=$((i + 1))
        start_apiserver "$name"
    done
    for name in "${names[@]}"; do wait_ready "$name"; done
    # The kubeconfigs carry the CA each apiserver wrote on its first start.
    write_kubeconfigs
    for name in "${names[@]}"; do
        start_controller_manager "$name"
        start_nodes "$name"
        create_nodes "$name"
    done
    echo "ready $state/kubeconfig"

    local verb name
    while read -r verb name; do
        case "$verb" in
            stop) stop_cluster "$name"; echo "ok $name" ;;
            start) start_cluster "$name"; echo "ok $name" ;;
            stop-etcd | start-etcd)
                if [ ! -f "$state/$name/etcd-port" ]; then
                    echo "error $name has no etcd of its own (up --etcd-per-cluster)"
                elif [ "$verb" = stop-etcd ]; then
                    stop_etcd "$name"; echo "ok $name"
                else
                    start_etcd_again "$name"; echo "ok $name"
                fi
                ;;
            quit) break ;;
            *) echo "error unknown command $verb" ;;
        esac
    done
}

cmd_down() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --state) state="$2"; shift ;;
            *) die "unknown option $1" ;;
        esac
        shift
    done
    state="${state:-$default_state}"
    local pid
    [ -f "$state/$marker" ] || die "no clusters are up in $state"
    pid="$(cat "$state/supervisor.pid" 2>/dev/null)" || die "no clusters are up in $state"
    # Killing the `sleep infinity | ...` pipeline closes the supervisor's stdin.
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -e "$state" ] || break; sleep 0.2; done
    [ ! -f "$state/$marker" ] || rm -rf "$state"
    echo "clusters stopped"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    *) die "usage: clusters.sh up [--detach] [--hub] [--state DIR] (N | NAME...) | clusters.sh down [--state DIR]" ;;
esac
