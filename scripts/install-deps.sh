#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages the build and the tests need and
# that are missing, and says what it installs:
#   build: protobuf-compiler and libprotobuf-dev (protoc for the gRPC code);
#   test:  the build packages, plus etcd-server and etcd-client (a real etcd
#          for the storage and end-to-end tests).
# Usage: scripts/install-deps.sh [build|test]   (default: test)
set -euo pipefail

what="${1:-test}"
missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)
if [ "$what" = "test" ]; then
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
elif [ "$what" != "build" ]; then
    echo "usage: $0 [build|test]" >&2
    exit 2
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing missing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
