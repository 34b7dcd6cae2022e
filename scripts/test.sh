#!/usr/bin/env bash
# Runs Coffer's whole test suite: vet, then every package's tests with the
# race detector. Tests that need an outside service (PostgreSQL, an S3
# server, SoftHSM2) skip when it is absent; with COFFER_REQUIRE_SERVICES=1
# (set by .ci/run) such a skip fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
go vet ./...
# The lean build (no cloud KMS SDKs: half the binary) must keep compiling.
go vet -tags nocloudkms ./...
go test -count=1 -tags nocloudkms ./internal/keys/
# The memory budget is peak RSS, measured without the race detector's
# shadow memory (the race run below skips it).
go test -count=1 -run '^TestMemoryBudget$' ./cmd/coffer/
go test -race -count=1 -timeout 45m ./... "$@"
