#!/usr/bin/env bash
# Builds helm v3 (what kustomize's `helmCharts` run, as `kubectl kustomize --enable-helm` does)
# from the Go module proxy, cached outside the repository; prints the binary's path.
exec "$(dirname "$0")/go-install-cached.sh" helm v3.22.0 \
    helm.sh/helm/v3/cmd/helm helm.sh/helm/v3/internal/version.version
