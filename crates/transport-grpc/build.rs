//! Compiles `proto/*.proto` (at the workspace root) with the system `protoc`
//! (Debian's protobuf-compiler; `scripts/install-deps.sh` installs it). Nothing
//! is downloaded. The StateManager's own files also yield a file descriptor
//! set for the reflection service; the ActionController's do not, so
//! reflection advertises only the services this server implements.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let proto_dir = manifest.join("../../proto");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    if Command::new(&protoc).arg("--version").output().is_err() {
        panic!(
            "transport-grpc needs protoc ({}) to compile proto/*.proto: install Debian's \
             protobuf-compiler and libprotobuf-dev (scripts/install-deps.sh), or set PROTOC",
            protoc.to_string_lossy()
        );
    }

    let file = |name: &str| proto_dir.join(name);
    for name in [
        "statemanager.proto",
        "monitoringserver.proto",
        "actioncontroller.proto",
    ] {
        println!("cargo:rerun-if-changed={}", file(name).display());
    }
    println!("cargo:rerun-if-env-changed=PROTOC");

    // A request that cannot be decoded is the caller's fault: `InvalidArgument`
    // (src/codec.rs), not tonic's `Internal`.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::ServiceCodec")
        .file_descriptor_set_path(out_dir.join("statemanager_descriptor.bin"))
        .compile_protos(
            &[file("statemanager.proto")],
            std::slice::from_ref(&proto_dir),
        )
        .unwrap_or_else(|e| panic!("compiling proto/statemanager.proto: {e}"));

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(
            &[file("actioncontroller.proto")],
            std::slice::from_ref(&proto_dir),
        )
        .unwrap_or_else(|e| panic!("compiling proto/actioncontroller.proto: {e}"));
}
