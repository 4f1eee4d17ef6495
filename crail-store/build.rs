//! Compiles the store's `.proto` files with protox (pure Rust), so a fresh machine needs no
//! system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        root.join("crail/store/v1/rpc.proto"),
        root.join("crail/store/v1/namenode.proto"),
        root.join("crail/store/v1/datanode.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;

    Ok(())
}
