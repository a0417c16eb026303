#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first, when it
# is missing, and says what it installs: etcd (the etcd-backed tests start a
# real etcd), protoc and the protobuf well-known types (the gRPC build).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast "$@"
    # nextest does not run doctests.
    cargo test --workspace --doc
else
    cargo test --workspace --all-targets --no-fail-fast "$@"
    cargo test --workspace --doc
fi
