#!/usr/bin/env bash
# `./dev demo`: Flotilla doing its job on five local member clusters.
#
# Starts the example fleet's five clusters with the test harness (tests/e2e/clusters.sh: real
# kube-apiservers, etcd and controller-managers on loopback), serves examples/fleet-repo from a
# local Git repository (a real commit), runs the agent (`flotilla run`) on it, then:
#   1. waits until every cluster is synced and shows `flotilla status` and the replica divisions;
#   2. commits a change (nginx 10 -> 20 replicas), announces it with a webhook as a Git host
#      would, and shows the new division arrive with the commit-to-applied time;
#   3. changes managed objects behind Flotilla's back (`kubectl set image`, `kubectl scale`) and
#      shows them corrected;
#   4. shows `flotilla plan --diff` between the two commits.
# Everything it starts is stopped at the end, on failure and on Ctrl-C; nothing is left behind.
# Needs what `just setup` installs and builds (`./dev demo` runs it first).
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
members=(cluster-hangzhou cluster-shanghai cluster-frankfurt spot-cluster ondemand-cluster)
token="demo-webhook-token"

say() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
# Debian's python3 (`just setup` installs it): a version manager's shim is a shell script
# that does not pass Ctrl-C on cleanly.
py() { if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$@"; else python3 "$@"; fi; }

work="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-demo.XXXXXX")"
agent_pid=""
clusters_pid=""
clusters_in=""

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    # Closing the supervisor's stdin stops every apiserver, controller-manager and etcd.
    [ -z "$clusters_in" ] || eval "exec $clusters_in>&-"
    [ -z "$agent_pid" ] || kill -TERM "$agent_pid" 2>/dev/null || true
    [ -z "$agent_pid" ] || wait "$agent_pid" 2>/dev/null || true
    [ -z "$clusters_pid" ] || wait "$clusters_pid" 2>/dev/null || true
    if [ "$code" != 0 ] && [ -f "$work/agent.log" ]; then
        echo "demo: failed; the agent's last log lines:" >&2
        tail -20 "$work/agent.log" >&2
    fi
    rm -rf "$work"
    [ "$code" = 0 ] && say "Stopped the agent and the clusters; nothing is left running."
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls a command until it succeeds, at most $1 seconds; $2 says what is awaited.
wait_for() {
    local seconds="$1" what="$2" deadline
    shift 2
    deadline=$(($(now_ms) + seconds * 1000))
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$deadline" ] || die "$what: not seen after $seconds s"
        sleep 0.05
    done
}

# The agent's /status as JSON.
status_json() { curl -fsS -m 2 "http://127.0.0.1:$port/status"; }

# Succeeds when every member cluster reports `synced` at commit $1.
all_synced_at() {
    status_json | py -c '
import json, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
status = json.load(sys.stdin)
commit, members = sys.argv[1], sys.argv[2:]
clusters = status.get("clusters", {})
sys.exit(0 if all(clusters.get(m, {}).get("status") == "synced" and clusters.get(m, {}).get("commit") == commit for m in members) else 1)
' "$1" "${members[@]}"
}

# The kubectl of the clusters' own version, as the harness links it.
kc() { "$(dirname "$kubeconfig")/bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# Prints, per Deployment, its replicas in each member cluster (what the clusters hold now).
show_divisions() {
    local cluster
    for cluster in "${members[@]}"; do
        kc --context "$cluster" get deployments --all-namespaces \
            -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.spec.replicas}{"\n"}{end}' \
            | sed "s|^|$cluster |"
    done | py -c '
import signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
members = sys.argv[1:]
table = {}
for line in sys.stdin:
    cluster, name, replicas = line.split()
    table.setdefault(name, {})[cluster] = replicas
widths = [max(len(m), 3) + 2 for m in members]
first = max([len("deployment")] + [len(n) for n in table])
print("   " + "deployment".ljust(first) + "".join(m.rjust(w) for m, w in zip(members, widths)) + "   total")
for name in sorted(table):
    row = table[name]
    total = sum(int(r) for r in row.values())
    print("   " + name.ljust(first) + "".join(row.get(m, "-").rjust(w) for m, w in zip(members, widths)) + "%8d" % total)
' "${members[@]}"
}

say "Building flotilla (cargo build)"
(cd "$repo_root" && cargo build --quiet)
# cargo's own answer, so that CARGO_TARGET_DIR (or a target-dir in a cargo config) is honoured.
target_dir="$(cd "$repo_root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
flotilla="$target_dir/debug/flotilla"
# The example fleet's status-page app is a Helm chart: the agent inflates it with helm v3.
FLOTILLA_HELM="$("$repo_root/tests/build-helm.sh")" || die "helm could not be built (tests/build-helm.sh)"
export FLOTILLA_HELM

say "Starting the example fleet's five member clusters (kube-apiserver, controller-manager, etcd)"
note "The first run builds Kubernetes from Go modules once (7-15 minutes); later runs reuse it."
started=$(now_ms)
coproc CLUSTERS { "$repo_root/tests/e2e/clusters.sh" up --state "$work/clusters" "${members[@]}"; }
clusters_pid=$CLUSTERS_PID
# Kept apart: bash forgets the coproc's descriptors once it exits.
clusters_in=${CLUSTERS[1]}
read -r ready kubeconfig <&"${CLUSTERS[0]}" || die "the clusters did not start"
[ "$ready" = ready ] || die "the clusters did not start: $ready $kubeconfig"
note "${#members[@]} clusters ready in $((($(now_ms) - started) / 1000)) s; kubeconfig $kubeconfig"
note "$(kc --context cluster-hangzhou version 2>/dev/null | grep -i '^server' || true)"

say "Serving examples/fleet-repo from a local Git repository"
git_() { git -C "$work/fleet" -c user.name="Demo" -c user.email="demo@example.com" "$@"; }
git init -q --bare -b main "$work/fleet.git"
git init -q -b main "$work/fleet"
cp -R "$repo_root/examples/fleet-repo/." "$work/fleet/"
git_ add -A
git_ commit -q -m "The example fleet"
git_ remote add origin "$work/fleet.git"
git_ push -q origin main
first_commit="$(git_ rev-parse HEAD)"
note "commit ${first_commit:0:12} pushed to file://$work/fleet.git"

say "Running the agent: flotilla run --repo file://$work/fleet.git --kubeconfig ..."
port="$(py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf '%s' "$token" >"$work/token"
started=$(now_ms)
setpriv --pdeathsig KILL -- "$flotilla" run --repo "file://$work/fleet.git" --ref main \
    --kubeconfig "$kubeconfig" --listen "127.0.0.1:$port" --generic-token-file "$work/token" \
    --interval 1h --cache-dir "$work/cache" --name demo >"$work/agent.log" 2>&1 &
agent_pid=$!
wait_for 120 "every cluster synced at ${first_commit:0:12}" all_synced_at "$first_commit"
note "every cluster synced in $((($(now_ms) - started))) ms from the agent's start"

say "flotilla status"
"$flotilla" status --server "http://127.0.0.1:$port" || true
say "Replicas in each cluster: nginx 60/40 -> 6/4, model-server 70/30 -> 7/3, batch-worker 80/20 -> 8/2, status-status-page (a Helm chart) 2 each"
show_divisions

say "Committing a change: nginx from 10 to 20 replicas, announced by a webhook"
sed -i 's/^  replicas: 10$/  replicas: 20/' "$work/fleet/apps/nginx/deployment.yaml"
git_ commit -q -am "nginx: 20 replicas"
second_commit="$(git_ rev-parse HEAD)"
started=$(now_ms)
git_ push -q origin main
curl -fsS -m 5 -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:$port/hooks/generic" >/dev/null
wait_for 60 "every cluster synced at ${second_commit:0:12}" all_synced_at "$second_commit"
note "commit ${second_commit:0:12} applied on every cluster $(($(now_ms) - started)) ms after the push"
show_divisions

planned_image="$(kc --context cluster-frankfurt -n global get deployment global-web \
    -o jsonpath='{.spec.template.spec.containers[0].image}')"
say "Drift: kubectl set image on cluster-frankfurt, behind Flotilla's back"
note "global-web's image is $planned_image"
started=$(now_ms)
kc --context cluster-frankfurt -n global set image deployment/global-web global-web=nginx:hijacked >/dev/null
image_is_planned() {
    [ "$(kc --context cluster-frankfurt -n global get deployment global-web \
        -o jsonpath='{.spec.template.spec.containers[0].image}')" = "$planned_image" ]
}
wait_for 30 "global-web's image corrected" image_is_planned
note "set to nginx:hijacked, corrected back to $planned_image within $(($(now_ms) - started)) ms"
status_json | py -c '
import json, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
for drift in json.load(sys.stdin)["clusters"]["cluster-frankfurt"]["drift"][-1:]:
    print("   /status:", json.dumps(drift))
'

say "Drift: kubectl scale on cluster-hangzhou"
started=$(now_ms)
kc --context cluster-hangzhou -n web scale deployment/nginx --replicas=1 >/dev/null
replicas_are_planned() {
    [ "$(kc --context cluster-hangzhou -n web get deployment nginx -o jsonpath='{.spec.replicas}')" = 12 ]
}
wait_for 30 "nginx's replicas corrected" replicas_are_planned
note "nginx scaled to 1, corrected back to 12 within $(($(now_ms) - started)) ms"

say "flotilla plan --diff: what the second commit moved"
mkdir -p "$work/before"
git_ archive "$first_commit" | tar -x -C "$work/before"
"$flotilla" plan "$work/fleet" --diff "$work/before"
