//! Compiles `proto/meridian/v1/*.proto` with tonic's codegen. `protoc` comes from the
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing installed by hand.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let files =
        ["common.proto", "agent.proto", "peer.proto"].map(|f| root.join("meridian/v1").join(f));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &files, &[root])?;
    Ok(())
}
