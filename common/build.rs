//! Compiles proto/cyberday/v1/*.proto into the `pb` module, plus the encoded
//! descriptor set that server reflection serves. protoc comes from the
//! protoc-bin-vendored crate, so nobody installs it by hand.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the env concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "../proto/cyberday/v1/coordinator.proto",
        "../proto/cyberday/v1/admin.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("cyberday_v1_descriptor.bin"))
        .compile_protos(&protos, &["../proto"])?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
