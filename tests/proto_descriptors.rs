//! The descriptors svrkit embeds for gRPC reflection (`svrkit_codegen::descriptor`) are the
//! ones protoc makes of the `.proto` files `svrkit proto` exports: field for field, for every
//! fixture package (maps, proto3 `optional`, enums with added zero values, reserved ranges,
//! services with oneway methods).

#[cfg(svrkit_protoc)]
include!("fixtures.rs");

#[cfg(not(svrkit_protoc))]
#[test]
fn descriptors_need_protoc() {
    svrkit_tests::external::PROTOC.skip();
}

#[cfg(svrkit_protoc)]
#[test]
fn descriptors_are_protocs() {
    use std::path::{Path, PathBuf};

    use prost::Message;
    use prost_types::FileDescriptorSet;
    use svrkit_codegen::ir::PackageId;

    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl");
    let files: Vec<PathBuf> = FIXTURES.iter().map(|f| idl.join(f)).collect();
    let compiled = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .include_dir(&idl)
        .check(&files)
        .unwrap();
    let schema = compiled.schema();

    // protoc's descriptors of the exported files (written by build.rs).
    let proto_dir = PathBuf::from(env!("OUT_DIR")).join("proto");
    let out = std::env::temp_dir().join(format!("svrkit-descriptors-{}.pb", std::process::id()));
    let names: Vec<String> = compiled.proto_files().into_iter().map(|f| f.name).collect();
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let status = std::process::Command::new(protoc)
        .arg("-I")
        .arg(&proto_dir)
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(&names)
        .status()
        .unwrap();
    assert!(status.success());
    let theirs = FileDescriptorSet::decode(&*std::fs::read(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);

    assert_eq!(theirs.file.len(), schema.packages.len());
    for i in 0..schema.packages.len() {
        let ours = svrkit_codegen::descriptor::file(schema, PackageId(i));
        let name = ours.name.clone().unwrap();
        let theirs = theirs
            .file
            .iter()
            .find(|f| f.name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("protoc made no {name}"));
        assert_eq!(&ours, theirs, "{name}");
    }
}

/// What a server embeds for a package is a set protoc would accept as it is: every file's
/// imports come before it, and the set names every type it uses.
#[test]
fn a_packages_set_holds_its_imports_first() {
    use prost::Message;
    use std::path::Path;

    let idl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl");
    let compiled = svrkit_codegen::Builder::new()
        .emit_rerun_if_changed(false)
        .include_dir(&idl)
        .check(&[idl.join("im/message.xml")])
        .unwrap();
    let schema = compiled.schema();
    let message = (0..schema.packages.len())
        .map(svrkit_codegen::ir::PackageId)
        .find(|&p| schema.package(p).name == "im.message")
        .unwrap();
    let set = prost_types::FileDescriptorSet::decode(&*svrkit_codegen::descriptor::set_for(
        schema, message,
    ))
    .unwrap();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    assert_eq!(names.last(), Some(&"im.message.proto"));
    for (at, file) in set.file.iter().enumerate() {
        for dependency in &file.dependency {
            let before = names[..at].contains(&dependency.as_str());
            assert!(
                before,
                "{} imports {dependency}, not before it in {names:?}",
                file.name()
            );
        }
    }
}
