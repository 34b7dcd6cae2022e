#!/usr/bin/env bash
# Installs versitygw, the S3 server (with versioning and Object Lock) that
# the S3 store's tests run against, into $HOME/go/bin unless it is there,
# and prints its path. The tests start and stop it themselves, on a free
# loopback port over a temporary directory (internal/store/s3/s3test);
# without it they skip, unless COFFER_REQUIRE_SERVICES is set.
set -euo pipefail
bin="${COFFER_VERSITYGW:-$HOME/go/bin/versitygw}"
if [ ! -x "$bin" ]; then
  GOBIN="$(dirname "$bin")" go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 >&2
fi
echo "$bin"
