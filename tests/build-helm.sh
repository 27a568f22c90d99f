#!/usr/bin/env bash
# Builds helm v3 (what kustomize's `helmCharts` run, as `kubectl kustomize --enable-helm` does)
# from the Go module proxy and caches it outside the repository. Prints the binary's path on
# stdout; progress on stderr. Never rebuilds a cached version.
#
#   FLOTILLA_KUBE_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/flotilla)
#   FLOTILLA_GO           the Go command (default /usr/local/go/bin/go, else `go` on PATH)
set -euo pipefail

version=v3.22.0
cache_root="${FLOTILLA_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
dir="$cache_root/helm-$version"
log() { echo "build-helm: $*" >&2; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.build-helm.lock"
flock 9
if [ -x "$dir/helm" ]; then
    echo "$dir/helm"
    exit 0
fi
go="${FLOTILLA_GO:-/usr/local/go/bin/go}"
[ -x "$go" ] || go="$(command -v go || true)"
[ -n "$go" ] || { log "no Go found (install Go, or set FLOTILLA_GO)"; exit 1; }
log "building helm $version with $("$go" version) (a few minutes, once)"
rm -rf "$dir.partial"
mkdir -p "$dir.partial"
GOBIN="$dir.partial" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    GOMODCACHE="$cache_root/gomod" GOCACHE="$cache_root/gocache" \
    "$go" install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
    "helm.sh/helm/v3/cmd/helm@$version" >&2
rm -rf "$dir" && mv "$dir.partial" "$dir"
log "cached in $dir"
echo "$dir/helm"
