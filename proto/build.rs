//! Generates the prost/tonic code for `switchyard.v1` without a system `protoc`.
//!
//! Two passes: the ordinary messages, clients and servers; then a second server for
//! `MetadataService` whose `WatchEvent` is a pre-encoded byte buffer, so the config service
//! encodes each version once and shares the bytes among all watchers.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "switchyard/v1/model.proto",
    "switchyard/v1/metadata.proto",
    "switchyard/v1/admin.proto",
];

#[allow(unsafe_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }

    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("switchyard_v1_descriptor.bin"))
        .compile_protos(PROTOS, &["."])?;

    let shared = out.join("shared");
    std::fs::create_dir_all(&shared)?;
    tonic_prost_build::configure()
        .out_dir(&shared)
        .build_client(false)
        .extern_path(".switchyard.v1", "crate::v1")
        .extern_path(".switchyard.v1.WatchEvent", "crate::EncodedWatchEvent")
        .compile_protos(&["switchyard/v1/metadata.proto"], &["."])?;
    Ok(())
}
