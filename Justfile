# Flotilla's tasks. `./dev <recipe>` installs `just` when missing and runs one of these.

# List the recipes.
default:
    @just --list

# Plan and render the example fleet (examples/fleet-repo); rendered files go to out/.
demo:
    cargo build --quiet
    @echo "== flotilla plan examples/fleet-repo"
    ./target/debug/flotilla plan examples/fleet-repo
    @echo
    @echo "== flotilla render examples/fleet-repo --out out/"
    ./target/debug/flotilla render examples/fleet-repo --out out
    @find out -name '*.yaml' | sort | sed 's/^/  /'
    @echo
    @echo "== what cluster-frankfurt gets for global-web (overrides applied)"
    @sed -n '/containers:/,/ports:/p' out/cluster-frankfurt/global/deployment.apps-global-web.yaml

# Run every test (unit, kustomize conformance, example fleet).
test:
    cargo test

# Formatting and lints, as CI checks them.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Benchmarks: render + placement of 1,000 clusters x 100 resources.
bench:
    cargo bench --bench render_place

# Regenerate the kustomize conformance fixtures with kubectl.
fixtures:
    tests/fixtures/kustomize/regenerate.sh
