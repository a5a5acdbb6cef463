//! Generates the Rust types and tonic stubs from `proto/manul.proto` and
//! `proto/flows.proto` with the
//! vendored `protoc`, so no system protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .bytes(".")
        .compile_with_config(
            config,
            &["proto/manul.proto", "proto/flows.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto/manul.proto");
    println!("cargo:rerun-if-changed=proto/flows.proto");
    Ok(())
}
