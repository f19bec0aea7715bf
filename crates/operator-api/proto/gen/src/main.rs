//! Regenerates the committed operator protobuf code. Run from anywhere; paths are relative to this file.
fn main() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = here.join("..");
    let out = here.join("../../src/proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&out)
        .compile_protos(&[proto_dir.join("operator.proto")], &[proto_dir])
        .expect("protoc failed");
}
