#!/usr/bin/env bash
# Runs Coffer's whole test suite: vet, then every package's tests with the
# race detector. Tests that need an outside service (PostgreSQL, an S3
# server, SoftHSM2) skip when it is absent; with COFFER_REQUIRE_SERVICES=1
# (set by .ci/run) such a skip fails instead. No service is needed yet.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
go test -race -count=1 -timeout 20m ./... "$@"
