//! Compiles `geoloc/v1/*.proto` with `protox` (pure Rust, no system `protoc`).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["geoloc/v1/probe.proto", "geoloc/v1/locate.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::compile_fds(fds)?;
    Ok(())
}
