#!/usr/bin/env bash
# Builds kustomize (the reference the conformance suite compares with) from the Go module proxy
# and caches it outside the repository. Prints the binary's path on stdout; progress on stderr.
# Never rebuilds a cached version. The version is the one the stored expected outputs were made
# with (tests/fixtures/kustomize/regenerate.sh).
#
#   FLOTILLA_KUBE_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/flotilla)
#   FLOTILLA_GO           the Go command (default /usr/local/go/bin/go, else `go` on PATH)
set -euo pipefail

version=v5.5.0
cache_root="${FLOTILLA_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
dir="$cache_root/kustomize-$version"
log() { echo "build-kustomize: $*" >&2; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.build-kustomize.lock"
flock 9
if [ -x "$dir/kustomize" ]; then
    echo "$dir/kustomize"
    exit 0
fi
go="${FLOTILLA_GO:-/usr/local/go/bin/go}"
[ -x "$go" ] || go="$(command -v go || true)"
[ -n "$go" ] || { log "no Go found (install Go, or set FLOTILLA_GO)"; exit 1; }
log "building kustomize $version with $("$go" version) (about a minute, once)"
rm -rf "$dir.partial"
mkdir -p "$dir.partial"
GOBIN="$dir.partial" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    GOMODCACHE="$cache_root/gomod" GOCACHE="$cache_root/gocache" \
    "$go" install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kustomize/api/provenance.version=$version" \
    "sigs.k8s.io/kustomize/kustomize/v5@$version" >&2
rm -rf "$dir" && mv "$dir.partial" "$dir"
log "cached in $dir"
echo "$dir/kustomize"
