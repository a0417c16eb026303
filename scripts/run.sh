#!/usr/bin/env bash
# Runs the statemanager daemon (release build). Installs protoc first when it
# is missing (the gRPC code is generated at build time), saying so.
# Arguments go to the daemon: scripts/run.sh --etcd-endpoints http://127.0.0.1:2379
# With none it keeps state in the embedded store (./statemanager-data, or
# $XDG_STATE_HOME/statemanager) and serves gRPC on 0.0.0.0:47006.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh build
exec cargo run --release -p statemanager -- "$@"
