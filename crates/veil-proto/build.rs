//! Compiles the gRPC APIs Veil speaks (client and server stubs).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .compile_protos(&["proto/ca.proto", "proto/config.proto"], &["proto"])?;
    Ok(())
}
