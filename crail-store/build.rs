//! Compiles the store's `.proto` files with protox (pure Rust), so a fresh machine needs no
//! system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = [
        root.join("crail/store/v1/rpc.proto"),
        root.join("crail/store/v1/namenode.proto"),
        root.join("crail/store/v1/datanode.proto"),
        root.join("crail/store/v1/journal.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    // The namenode's journal records exist only where the namenode does.
    for message in [
        "JournalRecord",
        "JournalRecord.op",
        "JournalHeader",
        "NodeCreated",
        "FileCommitted",
        "NodeDeleted",
        "NodeMoved",
        "DatanodeKnown",
        "Counters",
    ] {
        config.type_attribute(
            format!("crail.store.v1.{message}"),
            "#[cfg(feature = \"server\")]",
        );
    }
    config.compile_fds(descriptors)?;

    Ok(())
}
