#!/usr/bin/env bash
# Builds kustomize (the reference the conformance suite compares with) from the Go module proxy,
# cached outside the repository; prints the binary's path. The version is the one the stored
# expected outputs were made with (tests/fixtures/kustomize/regenerate.sh).
exec "$(dirname "$0")/go-install-cached.sh" kustomize v5.5.0 \
    sigs.k8s.io/kustomize/kustomize/v5 sigs.k8s.io/kustomize/api/provenance.version
