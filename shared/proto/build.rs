//! Generates the API from `proto/` with protox, a pure-Rust protobuf compiler,
//! so a fresh machine builds with cargo alone (no system `protoc`).

use std::path::PathBuf;

use prost::Message;

/// Every API file of the suite, relative to the `proto/` folder.
const PROTO_FILES: &[&str] = &["suite/user/v1/user.proto", "suite/order/v1/order.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    // Imports and source info are kept so reflection can describe every type,
    // with the proto comments, to grpcurl.
    let descriptors = protox::compile(PROTO_FILES, [&proto_root])?;
    let encoded = descriptors.encode_to_vec();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("suite_descriptor.bin"), &encoded)?;

    // Decoding through bytes keeps codegen independent of which prost-types
    // version protox itself was built against.
    let descriptors = prost_types::FileDescriptorSet::decode(encoded.as_slice())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A request that does not decode is the caller's fault: INVALID_ARGUMENT (src/codec.rs).
        .codec_path("crate::codec::SuiteCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
