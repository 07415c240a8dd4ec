fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: building needs nothing installed beyond Rust.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build reads PROTOC from this process's environment.
    #[allow(unsafe_code)]
    // SAFETY: a build script is single-threaded at this point.
    unsafe {
        std::env::set_var("PROTOC", protoc)
    };
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_protos(&["llmgateway/admission/v1/admission.proto"], &["."])?;
    println!("cargo:rerun-if-changed=llmgateway");
    Ok(())
}
