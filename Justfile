# Flotilla's tasks. `./dev <recipe>` installs `just` when missing and runs one of these.

# List the recipes.
default:
    @just --list

# Plan and render the example fleet (examples/fleet-repo); rendered files go to out/.
demo:
    cargo build --quiet
    @echo "== flotilla plan examples/fleet-repo"
    cargo run --quiet -- plan examples/fleet-repo
    @echo
    @echo "== flotilla render examples/fleet-repo --out out/"
    cargo run --quiet -- render examples/fleet-repo --out out
    @find out -name '*.yaml' | sort | sed 's/^/  /'
    @echo
    @echo "== what cluster-frankfurt gets for global-web (overrides applied)"
    @sed -n '/containers:/,/ports:/p' out/cluster-frankfurt/global/deployment.apps-global-web.yaml

# Run every test: unit, kustomize conformance, example fleet, and end to end on real
# apiservers (tests/e2e; builds them once from Debian's source, see `kube`).
test:
    cargo test

# Debian packages the build and the tests need: libssl-dev and pkg-config for git2's HTTPS,
# git, curl and prometheus for the end-to-end tests (kube builds its own, see `kube`).
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    for pkg in libssl-dev pkg-config git curl prometheus; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && exit 0
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"

# Build (or reuse from ~/.cache/flotilla) kube-apiserver and kube-controller-manager 1.20.
kube:
    tests/e2e/build-kube.sh

# Start member clusters in the background: a number (cluster-1..N) or names; `--hub` adds one.
clusters-up +ARGS="3":
    tests/e2e/clusters.sh up --detach {{ARGS}}

# Stop the clusters of `clusters-up`.
clusters-down:
    tests/e2e/clusters.sh down

# Formatting and lints, as CI checks them.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Benchmarks: render + placement of 1,000 clusters x 100 resources; sync of 5 clusters x 50
# objects against kubectl apply --server-side on real apiservers; the agent's webhook-to-applied
# and drift-correction latency, and its memory on 20 clusters x 500 objects.
bench:
    cargo bench --bench render_place
    cargo bench --bench sync
    cargo bench --bench agent
    cargo bench --bench hub

# Regenerate the kustomize conformance fixtures with kubectl.
fixtures:
    tests/fixtures/kustomize/regenerate.sh
