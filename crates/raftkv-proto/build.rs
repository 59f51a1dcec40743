//! Generates the protocol code from `proto/` with protox, a pure-Rust protobuf compiler, so
//! the build needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The package's directory when the script runs, not when it was compiled: a build
    // script binary reused from another checkout sharing the target directory would
    // otherwise read that checkout's protos.
    // `proto` in the package is a symlink to the workspace's `proto/`, so that a packaged
    // crate carries the files (cargo packages what a symlink points to).
    let proto_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files = [
        "etcd/kv.proto",
        "etcd/auth.proto",
        "etcd/rpc.proto",
        "etcd/v3lock.proto",
        "etcd/v3election.proto",
        "peer.proto",
        "faults.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(file).display());
    }
    let descriptors = protox::compile(files, [&proto_dir])?;
    tonic_prost_build::configure()
        .codec_path("crate::bounded_codec::BoundedCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
