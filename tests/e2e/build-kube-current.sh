#!/usr/bin/env bash
# Builds a current Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl),
# etcd 3.6 and, if it builds, kwok from the Go module proxy, and caches them outside the repository.
#
# On stdout it prints only lines a caller can eval:
#   KUBE_DIR=<dir with kube-apiserver, kube-controller-manager, kubectl>
#   ETCD_DIR=<dir with etcd>
#   KWOK_DIR=<dir with kwok and stages/ (its own node and pod stages), or empty when kwok is
#            skipped or does not build>
# Progress goes to stderr.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its ~31 staging modules
# (k8s.io/api, k8s.io/apiserver, ...) with local folders. So a throwaway wrapper module requires
# k8s.io/kubernetes and replaces each staging module with its published v0.MINOR.PATCH tag.
# etcd's server module has local replaces too, so it gets the same kind of wrapper.
#
# Environment:
#   FLOTILLA_KUBE_CACHE     cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/flotilla)
#   FLOTILLA_KUBE_VERSION   Kubernetes version (default v1.37.2)
#   FLOTILLA_ETCD_VERSION   etcd version (default v3.6.16, the newest 3.6 served on 2026-11-25)
#   FLOTILLA_KWOK_VERSION   kwok version (default v0.8.0); FLOTILLA_BUILD_KWOK=0 skips kwok.
#                           A failed kwok build is remembered in <cache>/kwok-VERSION.failed and
#                           not retried until that file is removed.
#   FLOTILLA_GO             the Go command (default /usr/local/go/bin/go, not Debian's older one)
#
# The binaries are cached as:
#   <cache>/kube-VERSION-RECIPE/   <cache>/etcd-VERSION-RECIPE/   <cache>/kwok-VERSION-RECIPE/
# Bump `recipe` when the way of building changes, so a stale binary is not reused.
set -euo pipefail

# Everything that is not the final KEY=value lines goes to stderr.
exec 3>&1 1>&2

cache_root="${FLOTILLA_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}"
kube_version="${FLOTILLA_KUBE_VERSION:-v1.37.2}"
etcd_version="${FLOTILLA_ETCD_VERSION:-v3.6.16}"
kwok_version="${FLOTILLA_KWOK_VERSION:-v0.8.0}"
build_kwok="${FLOTILLA_BUILD_KWOK:-1}"
go="${FLOTILLA_GO:-/usr/local/go/bin/go}"
# Approved newer toolchain, used only when a module's go line demands more than the local Go.
newer_toolchain=go1.27.3
recipe=gomod2

start=$SECONDS
log() { echo "build-kube-current: [$((SECONDS - start))s] $*" >&2; }
die() { echo "build-kube-current: error: $*" >&2; exit 1; }

[[ "$kube_version" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "FLOTILLA_KUBE_VERSION must look like v1.37.2, not '$kube_version'"
kube_minor="${BASH_REMATCH[1]}"
staging_version="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
[[ "$etcd_version" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "FLOTILLA_ETCD_VERSION must look like v3.6.16, not '$etcd_version'"
[ -x "$go" ] || die "no Go at $go (set FLOTILLA_GO)"
command -v flock >/dev/null || die "flock (util-linux) is needed"

kube_dir="$cache_root/kube-$kube_version-$recipe"
etcd_dir="$cache_root/etcd-$etcd_version-$recipe"
kwok_dir="$cache_root/kwok-$kwok_version-$recipe"
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

have_all() {
    local dir="$1"; shift
    local b
    for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

emit() {
    printf 'KUBE_DIR=%q\nETCD_DIR=%q\nKWOK_DIR=%q\n' "$kube_dir" "$etcd_dir" "${kwok_out:-}" >&3
}

mkdir -p "$cache_root"
# One build at a time (tests and benchmarks may start together); the second reuses the first's.
exec 9>"$cache_root/.build-current.lock"
if ! flock -n 9; then
    log "another build holds $cache_root/.build-current.lock; waiting for it"
    flock 9
fi

need_kube=true need_etcd=true need_kwok=false kwok_out=""
if have_all "$kube_dir" "${kube_bins[@]}"; then log "reusing $kube_dir"; need_kube=false; fi
if have_all "$etcd_dir" etcd; then log "reusing $etcd_dir"; need_etcd=false; fi
if [ "$build_kwok" = 1 ]; then
    if have_all "$kwok_dir" kwok && [ -f "$kwok_dir/stages/pod-ready.yaml" ]; then
        log "reusing $kwok_dir"; kwok_out="$kwok_dir"
    elif [ -f "$kwok_dir.failed" ]; then
        log "kwok $kwok_version failed before (see $kwok_dir.failed); skipping it (remove that file to retry)"
    else
        need_kwok=true
    fi
fi
if ! $need_kube && ! $need_etcd && ! $need_kwok; then emit; exit 0; fi

# Module downloads and compiled packages are kept under the cache root and reused across runs.
export GOPATH="$cache_root/gopath" GOMODCACHE="$cache_root/gomod" GOCACHE="$cache_root/gocache"
export GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0 GO111MODULE=on GOTOOLCHAIN=local
export GOPROXY="${GOPROXY:-https://proxy.golang.org}" GOENV=off GOWORK=off
mkdir -p "$GOPATH" "$GOMODCACHE" "$GOCACHE"
local_go="$("$go" env GOVERSION)"
log "using $local_go ($go), cache root $cache_root"
$need_kube && log "first build of Kubernetes $kube_version: 7-15 minutes on 2 cores (once; later runs reuse it)"

work="$(mktemp -d "${TMPDIR:-/tmp}/flotilla-kube-current.XXXXXX")"
cleanup() {
    rm -rf "$work"
    # A build that stopped half way leaves no .partial behind (we hold the lock, so it is ours).
    rm -rf "$kube_dir.partial" "$etcd_dir.partial" "$kwok_dir.partial"
}
trap cleanup EXIT

# Prints the path of MODULE@VERSION's go.mod in the module cache, downloading it if needed.
fetch_gomod() {
    local mv="$1" json path
    json="$(cd "$work" && GOFLAGS=-modcacherw "$go" mod download -json "$mv" 2>&1)" \
        || die "the module proxy did not serve $mv: $json"
    path="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
    [ -f "$path" ] || die "no go.mod for $mv in: $json"
    echo "$path"
}

# Prints the `go` and `godebug` lines of a go.mod and chooses the toolchain for it.
# The wrapper module copies them, so the binaries get the same GODEBUG defaults as upstream's.
go_lines() {
    local gomod="$1" need
    need="$(awk '$1 == "go" {print $2; exit}' "$gomod")"
    [ -n "$need" ] || need=1.21
    if [ "$(printf '%s\n%s\n' "${local_go#go}" "$need" | sort -V | tail -1)" != "${local_go#go}" ]; then
        log "$(basename "$gomod") needs go $need, newer than $local_go: using GOTOOLCHAIN=$newer_toolchain"
        export GOTOOLCHAIN="$newer_toolchain"
    fi
    echo "go $need"
    awk '$1 == "godebug" && $2 == "(" {inblock = 1} inblock {print} inblock && $1 == ")" {inblock = 0}
         $1 == "godebug" && $2 != "(" {print}' "$gomod"
}

# Writes a wrapper module in DIR that requires MODULE VERSION and imports the main PACKAGES.
make_wrapper() {
    local dir="$1" module="$2" version="$3" gomod="$4" replaces="$5"; shift 5
    mkdir -p "$dir"
    export GOTOOLCHAIN=local
    {
        echo "module flotilla.invalid/build-$(basename "$dir")"
        echo
        go_lines "$gomod"
        echo
        echo "require $module $version"
        if [ -n "$replaces" ]; then
            echo
            echo "replace ("
            printf '%s\n' "$replaces"
            echo ")"
        fi
    } >"$dir/go.mod"
    {
        echo "//go:build tools"
        echo
        echo "// Package tools only pins the programs this module builds."
        echo "package tools"
        echo
        echo "import ("
        local p
        for p in "$@"; do echo "	_ \"$p\""; done
        echo ")"
    } >"$dir/tools.go"
}

tidy() {
    local dir="$1" what="$2" t0=$SECONDS
    log "downloading modules for $what (go mod tidy)..."
    (cd "$dir" && "$go" mod tidy) || die "go mod tidy failed for $what (wrapper module: $dir/go.mod)"
    (cd "$dir" && "$go" mod download) || die "go mod download failed for $what"
    log "modules for $what ready in $((SECONDS - t0))s"
}

total_steps=0
$need_kube && total_steps=$((total_steps + 3))
$need_etcd && total_steps=$((total_steps + 1))
$need_kwok && total_steps=$((total_steps + 1))
step=0
timings=()

# build DIR OUT PACKAGE LDFLAGS: builds one binary from wrapper module DIR.
build() {
    local dir="$1" out="$2" pkg="$3" ldflags="$4" name t0=$SECONDS
    name="$(basename "$out")"
    step=$((step + 1))
    log "building $name ($step/$total_steps)..."
    (cd "$dir" && "$go" build -trimpath -ldflags "-s -w $ldflags" -o "$out" "$pkg") || return 1
    log "built $name in $((SECONDS - t0))s ($(du -h "$out" | cut -f1))"
    timings+=("$name=$((SECONDS - t0))s")
}

if $need_kube; then
    kube_mod="$(fetch_gomod "k8s.io/kubernetes@$kube_version")"
    # Every staging module that the tag's go.mod points at ./staging/src/... gets its published tag.
    replaces="$(awk -v v="$staging_version" \
        '$2 == "=>" && $3 ~ /^\.\/staging\/src\// {printf "\t%s => %s %s\n", $1, $1, v}' "$kube_mod")"
    [ -n "$replaces" ] || die "no ./staging replaces found in $kube_mod; the recipe needs a look"
    log "kubernetes $kube_version: $(wc -l <<<"$replaces") staging modules pinned to $staging_version"
    kube_work="$work/kube"
    make_wrapper "$kube_work" k8s.io/kubernetes "$kube_version" "$kube_mod" "$replaces" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
    tidy "$kube_work" "kubernetes $kube_version"
    # As hack/lib/version.sh does: otherwise the binaries report v0.0.0-master.
    build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    kube_ldflags=""
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        kube_ldflags+=" -X $p.gitVersion=$kube_version -X $p.gitMajor=1 -X $p.gitMinor=$kube_minor"
        kube_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
    done
    rm -rf "$kube_dir.partial"
    mkdir -p "$kube_dir.partial"
    for b in "${kube_bins[@]}"; do
        build "$kube_work" "$kube_dir.partial/$b" "k8s.io/kubernetes/cmd/$b" "$kube_ldflags" \
            || die "building $b of kubernetes $kube_version failed (try FLOTILLA_KUBE_VERSION=v1.36.3)"
    done
    got="$("$kube_dir.partial/kube-apiserver" --version)"
    [ "$got" = "Kubernetes $kube_version" ] || die "kube-apiserver --version says '$got', expected 'Kubernetes $kube_version'"
    rm -rf "$kube_dir" && mv "$kube_dir.partial" "$kube_dir"
    log "cached kubernetes $kube_version in $kube_dir"
fi

if $need_etcd; then
    etcd_mod="$(fetch_gomod "go.etcd.io/etcd/server/v3@$etcd_version")"
    etcd_work="$work/etcd"
    # The etcd binary's main package is the server module's root in 3.5 and later.
    make_wrapper "$etcd_work" go.etcd.io/etcd/server/v3 "$etcd_version" "$etcd_mod" "" go.etcd.io/etcd/server/v3
    tidy "$etcd_work" "etcd $etcd_version"
    rm -rf "$etcd_dir.partial"
    mkdir -p "$etcd_dir.partial"
    build "$etcd_work" "$etcd_dir.partial/etcd" go.etcd.io/etcd/server/v3 \
        "-X go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version" || die "building etcd $etcd_version failed"
    got="$("$etcd_dir.partial/etcd" --version | head -1)"
    [ "$got" = "etcd Version: ${etcd_version#v}" ] || die "etcd --version says '$got', expected ${etcd_version#v}"
    rm -rf "$etcd_dir" && mv "$etcd_dir.partial" "$etcd_dir"
    log "cached etcd $etcd_version in $etcd_dir"
fi

if $need_kwok; then
    kwok_log="$work/kwok.log"
    # kwok is optional: its failure is logged and remembered, and the rest still counts.
    kwok_t0=$SECONDS
    set +e
    (
        set -euo pipefail
        kwok_mod="$(fetch_gomod "sigs.k8s.io/kwok@$kwok_version")"
        kwok_work="$work/kwok"
        make_wrapper "$kwok_work" sigs.k8s.io/kwok "$kwok_version" "$kwok_mod" "" sigs.k8s.io/kwok/cmd/kwok
        tidy "$kwok_work" "kwok $kwok_version"
        rm -rf "$kwok_dir.partial"
        mkdir -p "$kwok_dir.partial"
        build "$kwok_work" "$kwok_dir.partial/kwok" sigs.k8s.io/kwok/cmd/kwok \
            "-X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v}"
        "$kwok_dir.partial/kwok" --version
        # kwok's own stages, from its module: nodes become Ready, pods Running and Ready,
        # finished pods Succeeded, deleted pods gone (the harness adds its crash-loop stage).
        stage_src="$GOMODCACHE/sigs.k8s.io/kwok@$kwok_version/kustomize/stage"
        mkdir -p "$kwok_dir.partial/stages"
        cp "$stage_src/node/fast/node-initialize.yaml" "$stage_src/pod/fast/pod-ready.yaml" \
            "$stage_src/pod/fast/pod-complete.yaml" "$stage_src/pod/fast/pod-delete.yaml" \
            "$kwok_dir.partial/stages/"
        rm -rf "$kwok_dir" && mv "$kwok_dir.partial" "$kwok_dir"
    ) 2>&1 | tee "$kwok_log" >&2
    kwok_rc="${PIPESTATUS[0]}"
    set -e
    if [ "$kwok_rc" = 0 ]; then
        kwok_out="$kwok_dir"
        timings+=("kwok=$((SECONDS - kwok_t0))s(with modules)")
        log "cached kwok $kwok_version in $kwok_dir"
    else
        cp "$kwok_log" "$kwok_dir.failed"
        log "kwok $kwok_version did not build (optional; log kept in $kwok_dir.failed); KWOK_DIR is empty"
    fi
fi

log "done in $((SECONDS - start))s${timings[*]:+ (${timings[*]})}"
emit
