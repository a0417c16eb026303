#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages the build and the tests need and
# that are missing: etcd-server and etcd-client (a real etcd for the storage
# tests), protobuf-compiler and libprotobuf-dev (protoc for the gRPC code).
# Prints what it installs; installs nothing when all is present.
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/timestamp.proto ] || missing+=(libprotobuf-dev)

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
