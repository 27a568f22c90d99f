#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager 1.20 from Debian's `kubernetes` source and
# caches them outside the repository (DESIGN section 4). Prints the cache directory on stdout.
#
# The cache key is the Debian source version plus `recipe`: bump it when the way of building
# changes (for example the reflect2 fix), so a stale binary is not reused.
set -euo pipefail

cache_root="${FLOTILLA_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
recipe=reflect2-1.0.2

log() { echo "build-kube: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_packages=()
for pkg in golang-go etcd-server golang-github-modern-go-reflect2-dev dpkg-dev rsync; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_packages+=("$pkg")
done
src_list=/etc/apt/sources.list.d/flotilla-deb-src.sources
if [ ! -f "$src_list" ]; then
    log "adding a deb-src entry for bookworm"
    as_root tee "$src_list" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    as_root apt-get update -qq >&2
fi
if [ "${#need_packages[@]}" -gt 0 ]; then
    log "installing ${need_packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >&2
fi

version="$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -1)"
[ -n "$version" ] || { log "no kubernetes source package found"; exit 1; }
cache="$cache_root/kube-${version//[:~]/_}-$recipe"
# One build at a time (tests and benchmarks may start together); the second reuses the first's.
mkdir -p "$cache_root"
exec 9>"$cache_root/.build.lock"
flock 9
if [ -x "$cache/kube-apiserver" ] && [ -x "$cache/kube-controller-manager" ]; then
    log "reusing $cache"
    echo "$cache"
    exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-kube-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "building kubernetes $version in $work (4-10 minutes on 2 cores, once; later runs reuse it)"
(cd "$work" && apt-get source -qq "kubernetes=$version" >&2)
tree="$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -1)"
[ -n "$tree" ] || { log "apt-get source unpacked no kubernetes-* directory in $work"; exit 1; }

debian_go="$(dirname "$(readlink -f /usr/bin/go)")"
[ -x "$debian_go/go" ] || { log "Debian's Go (golang-go) not found at /usr/bin/go"; exit 1; }
log "using $("$debian_go/go" version)"

# The vendored reflect2 1.0.1 crashes under Go >= 1.18 ("fatal error: fault" in mapiternext).
reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2
rm -rf "$tree/vendor/github.com/modern-go/reflect2"
mkdir -p "$tree/vendor/github.com/modern-go/reflect2"
find "$reflect2_src" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -exec cp {} "$tree/vendor/github.com/modern-go/reflect2/" \;

# The Makefile wants the tree at $GOPATH/src/k8s.io/kubernetes.
gopath="$work/gopath"
mkdir -p "$gopath/src/k8s.io" "$work/home"
ln -s "$tree" "$gopath/src/k8s.io/kubernetes"
(
    cd "$gopath/src/k8s.io/kubernetes"
    # Debian's Go 1.19 by its own path: the machine's `go` on PATH may be a newer release that
    # this 1.20 tree does not build with.
    export PATH="$debian_go:$PATH"
    export GOPATH="$gopath" HOME="$work/home" CGO_ENABLED=0 GOFLAGS=-mod=vendor GO111MODULE=on GOTOOLCHAIN=local
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
)
rm -rf "$cache.partial"
mkdir -p "$cache.partial"
for bin in kube-apiserver kube-controller-manager; do
    cp "$(find "$tree/_output" -type f -name "$bin" -perm -u+x | head -1)" "$cache.partial/$bin"
done
rm -rf "$cache" && mv "$cache.partial" "$cache"
log "cached in $cache"
echo "$cache"
