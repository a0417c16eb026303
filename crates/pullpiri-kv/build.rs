//! Compiles `proto/rocksdbservice.proto` (at the workspace root) with the
//! system `protoc` (Debian's protobuf-compiler), as transport-grpc does.
//! Nothing is downloaded. The server side is generated too: the `testing`
//! feature's double serves it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let proto_dir = manifest.join("../../proto");
    let proto = proto_dir.join("rocksdbservice.proto");

    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    if Command::new(&protoc).arg("--version").output().is_err() {
        panic!(
            "pullpiri-kv needs protoc ({}) to compile proto/rocksdbservice.proto: install \
             Debian's protobuf-compiler (scripts/install-deps.sh), or set PROTOC",
            protoc.to_string_lossy()
        );
    }
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=PROTOC");

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&[proto], std::slice::from_ref(&proto_dir))
        .unwrap_or_else(|e| panic!("compiling proto/rocksdbservice.proto: {e}"));
}
