//! Compiles the IDL fixtures twice, independently: with svrkit (into `OUT_DIR`), and with
//! prost from the `.proto` files `svrkit proto` exports (into `OUT_DIR/prost*`). The tests
//! check that the two agree on every byte.
//!
//! Without `protoc` (a machine with only the Rust toolchain) the prost and tonic side is left
//! out, with a build warning, and `cfg(svrkit_protoc)` is not set: the tests that need it
//! say they skipped (`svrkit_tests::external`).

use std::path::{Path, PathBuf};

include!("fixtures.rs");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo::rustc-check-cfg=cfg(svrkit_protoc)");
    println!("cargo::rerun-if-env-changed=PROTOC");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl");
    let files: Vec<PathBuf> = FIXTURES.iter().map(|f| idl.join(f)).collect();

    // What a user's build script does.
    svrkit_codegen::Builder::new()
        .include_dir(&idl)
        .compile(&files)?;
    // The two versions of one schema (one package, one service id), each compiled on its
    // own, as the binaries built from them would be.
    for version in ["v1", "v2"] {
        svrkit_codegen::Builder::new()
            .out_dir(out.join("evolution").join(version))
            .compile(&[idl.join(format!("test/evolution/{version}.xml"))])?;
    }

    // The `.proto` export, compiled by protoc and prost-build.
    let compiled = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .check(&files)?;
    let proto_dir = out.join("proto");
    let mut protos = Vec::new();
    for file in compiled.proto_files() {
        let path = proto_dir.join(&file.name);
        svrkit_codegen::write_if_changed(&path, &file.content)?;
        protos.push(path);
    }
    if std::env::var_os("PROTOC").is_none() && which_protoc().is_none() {
        // Installing protoc later adds a file to a directory on the PATH, which changes the
        // directory's modification time: cargo runs this script again then.
        println!("cargo::rerun-if-env-changed=PATH");
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            if dir.is_absolute() && dir.is_dir() {
                println!("cargo::rerun-if-changed={}", dir.display());
            }
        }
        println!(
            "cargo::warning=protoc not found: the prost interop tests and the benchmarks \
             against prost and tonic are left out (apt-get install protobuf-compiler, or set \
             PROTOC)"
        );
        return Ok(());
    }
    println!("cargo::rustc-cfg=svrkit_protoc");
    let prost_out = out.join("prost");
    std::fs::create_dir_all(&prost_out)?;
    // BTreeMap and Bytes make prost's types directly comparable with svrkit's.
    prost_build::Config::new()
        .btree_map(["."])
        .bytes(["."])
        .out_dir(&prost_out)
        .compile_protos(&protos, &[&proto_dir])?;

    // tonic, for the RPC benchmark (the same chat service as gRPC) and for the gRPC tests
    // (the test service, called by tonic on a svrkit server's port).
    let tonic_out = out.join("tonic");
    std::fs::create_dir_all(&tonic_out)?;
    tonic_prost_build::configure()
        .bytes(".")
        .out_dir(&tonic_out)
        .compile_protos(
            &[
                proto_dir.join("bench.chat.proto"),
                proto_dir.join("test.rpc.proto"),
            ],
            std::slice::from_ref(&proto_dir),
        )?;

    // prost-build writing to OUT_DIR itself, as a crate that uses both would: its
    // `bench.chat.rs` sits beside svrkit's (which is in OUT_DIR/svrkit).
    prost_build::Config::new()
        .bytes(["."])
        .compile_protos(&[proto_dir.join("bench.chat.proto")], &[&proto_dir])?;

    // prost with its default settings, for the benchmark.
    let prost_default = out.join("prost_default");
    std::fs::create_dir_all(&prost_default)?;
    prost_build::Config::new()
        .out_dir(&prost_default)
        .compile_protos(&[proto_dir.join("bench.chat.proto")], &[&proto_dir])?;
    Ok(())
}

fn which_protoc() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("protoc"))
        .find(|p| p.is_file())
}
