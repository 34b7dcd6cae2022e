#!/usr/bin/env bash
# The main job on a fresh machine: build coffer, back up a sample directory
# into the embedded default vault ($COFFER_HOME, default
# ~/.local/share/coffer), restore it, and prove the copy is identical.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building coffer (the first build downloads and compiles dependencies: a few minutes)…" >&2
go build -o ./coffer ./cmd/coffer
work=$(mktemp -d /tmp/coffer-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sample/docs" "$work/sample/empty"
cp -r docs/. "$work/sample/docs/"
head -c 5000000 /dev/urandom > "$work/sample/random.bin"
ln -s docs "$work/sample/link-to-docs"
./coffer backup "$work/sample" --tag demo
./coffer snapshots
./coffer restore latest --target "$work/restored"
diff -r --no-dereference "$work/sample" "$work/restored$work/sample"
echo "restored copy is identical"
./coffer check --read-data
./coffer vault show
