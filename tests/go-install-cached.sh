#!/usr/bin/env bash
# Builds one Go command from the Go module proxy (`go install PACKAGE@VERSION`, its version
# stamped at VERSION_VARIABLE) into ${cache}/NAME-VERSION and prints the binary's path on stdout;
# progress on stderr. A cached version is never rebuilt. Used by build-helm.sh and
# build-kustomize.sh.
#
#   go-install-cached.sh NAME VERSION PACKAGE VERSION_VARIABLE
#
#   FLOTILLA_KUBE_CACHE   cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/flotilla)
#   FLOTILLA_GO           the Go command (default /usr/local/go/bin/go, else `go` on PATH)
set -euo pipefail

[ "$#" -eq 4 ] || { echo "usage: $0 NAME VERSION PACKAGE VERSION_VARIABLE" >&2; exit 2; }
name=$1 version=$2 package=$3 version_variable=$4
cache_root="${FLOTILLA_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
dir="$cache_root/$name-$version"
log() { echo "build-$name: $*" >&2; }

mkdir -p "$cache_root"
exec 9>"$cache_root/.build-$name.lock"
flock 9
if [ -x "$dir/$name" ]; then
    echo "$dir/$name"
    exit 0
fi
go="${FLOTILLA_GO:-/usr/local/go/bin/go}"
[ -x "$go" ] || go="$(command -v go || true)"
[ -n "$go" ] || { log "no Go found (install Go, or set FLOTILLA_GO)"; exit 1; }
log "building $name $version with $("$go" version) (a few minutes, once)"
rm -rf "$dir.partial"
mkdir -p "$dir.partial"
GOBIN="$dir.partial" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    GOMODCACHE="$cache_root/gomod" GOCACHE="$cache_root/gocache" \
    "$go" install -trimpath -ldflags "-s -w -X $version_variable=$version" \
    "$package@$version" >&2
rm -rf "$dir" && mv "$dir.partial" "$dir"
log "cached in $dir"
echo "$dir/$name"
