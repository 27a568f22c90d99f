# Flotilla's tasks. `./dev <recipe>` installs `just` when missing and runs one of these.

# List the recipes.
default:
    @just --list

# The agent at work: five local member clusters, `flotilla run` on examples/fleet-repo served
# from a local Git repo, a commit, drift corrected, a plan diff; everything stopped at the end.
# `./dev demo --offline` only plans and renders (no clusters). Sets itself up first (`setup`).
demo *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    case "{{ARGS}}" in
        --offline) just demo-offline ;;
        "") just setup && examples/demo.sh ;;
        *) echo "demo: unknown argument(s) {{ARGS}} (only --offline)" >&2; exit 2 ;;
    esac

# Plan and render the example fleet (examples/fleet-repo); rendered files go to out/.
demo-offline:
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
# apiservers of the current Kubernetes, then the end-to-end suite again on the 1.20
# compatibility lane (`test-compat`). Sets itself up first (`setup`: Debian packages, the test
# apiservers).
test: setup
    cargo test
    just test-compat

# Everything the demo and the tests need that cargo does not fetch: Debian packages (`deps`)
# and the test apiservers (`kube`, built once and cached in ~/.cache/flotilla).
setup: deps kube

# Debian packages the build and the tests need: libssl-dev and pkg-config for git2's HTTPS,
# git, curl, python3 and openssl for the harness, etcd-server for the test clusters, prometheus
# for the metrics test, and kubectl (Debian's kubernetes-client when no kubectl is on PATH).
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    wanted=(libssl-dev pkg-config git curl python3 openssl etcd-server prometheus)
    command -v kubectl >/dev/null 2>&1 || wanted+=(kubernetes-client)
    missing=()
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && exit 0
    echo "deps: installing ${missing[*]}" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"

# Build (or reuse from ~/.cache/flotilla) the test control plane of the lane FLOTILLA_KUBE
# selects: `current` (the default: Kubernetes 1.37 with etcd 3.6 and kwok, from Go modules,
# 7-15 minutes the first time) or `1.20` (from Debian's source, 4-10 minutes), and the
# reference kustomize and the helm v3 (for helmCharts) the conformance suite runs.
kube:
    #!/usr/bin/env bash
    set -euo pipefail
    case "${FLOTILLA_KUBE:-current}" in
        current) tests/e2e/build-kube-current.sh >/dev/null ;;
        1.20) tests/e2e/build-kube.sh >/dev/null ;;
        *) echo "kube: FLOTILLA_KUBE must be current or 1.20" >&2; exit 2 ;;
    esac
    tests/build-kustomize.sh >/dev/null
    tests/build-helm.sh >/dev/null

# The compatibility lane: the end-to-end suite on Kubernetes 1.20 (the example fleet, zero-write
# re-syncs, prune, drift correction, diff, the agent), with the 1.20-only apply forms, the
# crash-safety tests (the agent SIGKILLed mid-sync, drift while it was down) and the fault
# suite (1.20's apiserver and Debian's etcd 3.4 killed and restarted).
test-compat:
    FLOTILLA_KUBE=1.20 just setup
    FLOTILLA_KUBE=1.20 cargo test --test e2e --test crash_safety --test faults

# Start member clusters in the background: a number (cluster-1..N) or names; `--hub` adds one.
clusters-up +ARGS="3":
    tests/e2e/clusters.sh up --detach {{ARGS}}

# Stop the clusters of `clusters-up`.
clusters-down:
    tests/e2e/clusters.sh down

# Formatting and lints, as CI checks them. A machine without rustfmt or clippy (rustup cannot
# download components everywhere) is told so loudly, and the other check still runs.
check:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=0
    if cargo fmt --version >/dev/null 2>&1; then
        cargo fmt --all -- --check
    else
        echo "check: ********** rustfmt is not installed: formatting NOT checked **********" >&2
        missing=1
    fi
    if cargo clippy --version >/dev/null 2>&1; then
        cargo clippy --all-targets -- -D warnings
    else
        echo "check: ********** clippy is not installed: lints NOT checked **********" >&2
        missing=1
    fi
    [ "$missing" = 0 ] || echo "check: ran what this machine has; see the lines above" >&2

# Benchmarks: render + placement of 1,000 clusters x 100 resources; sync of 5 clusters x 50
# objects against kubectl apply --server-side on real apiservers; the agent's webhook-to-applied
# and drift-correction latency, and its memory on 20 clusters x 500 objects.
bench:
    cargo bench --bench render_place
    cargo bench --bench kustomize
    cargo bench --bench sync
    cargo bench --bench agent
    cargo bench --bench hub

# Seeds are fuzz/corpus/<target>/ (committed, small; `fuzz/seeds.py` regenerates them); what a
# run adds goes to fuzz/work/, and an input that crashes, hangs (over 10 s) or takes more than
# 2 GiB to fuzz/artifacts/<target>/. Not in CI.
# Fuzz the YAML loader, kustomize build, strategic merge / JSON patch, overriders and placement
# (cargo-fuzz, nightly) for SECONDS each (default 60), or only TARGETS: `./dev fuzz 300 placement`.
fuzz SECONDS="60" *TARGETS:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "fuzz: ********** the nightly Rust toolchain is missing (cargo-fuzz needs it): rustup toolchain install nightly **********" >&2
        exit 2
    fi
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)..." >&2
        cargo install cargo-fuzz --locked --quiet
    fi
    targets=({{TARGETS}})
    [ "${#targets[@]}" -gt 0 ] || targets=(yaml_load kustomize_build merge_patch overriders placement)
    # No sanitizer: the library is safe Rust (bounds, overflow and debug assertions are on); a
    # sanitizer would double the build and run time and find nothing more.
    cargo +nightly fuzz build --sanitizer none
    failed=()
    for target in "${targets[@]}"; do
        case "$target" in kustomize_build | placement) max_len=16384 ;; *) max_len=8192 ;; esac
        mkdir -p "fuzz/work/$target"
        echo "== fuzz $target for {{SECONDS}} s" >&2
        cargo +nightly fuzz run --sanitizer none "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
            -max_total_time={{SECONDS}} -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 -dict=fuzz/yaml.dict \
            -print_final_stats=1 || failed+=("$target")
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "fuzz: FAILED: ${failed[*]} (the inputs are in fuzz/artifacts/<target>/)" >&2
        exit 1
    fi
    echo "fuzz: ${targets[*]}: nothing found in {{SECONDS}} s each" >&2

# Regenerate the kustomize conformance fixtures with kustomize v5.5.0 (built once from Go modules).
fixtures:
    tests/fixtures/kustomize/regenerate.sh
