//! Generated Rust and `.proto` for every file in `idl/`, snapshot-tested, and checks that
//! output is deterministic.

use std::path::{Path, PathBuf};

use svrkit_codegen::Builder;

fn idl_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../idl")
}

/// Every `.xml` under `idl/`, sorted, relative to it.
fn idl_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "xml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&idl_dir(), &mut files);
    files.sort();
    assert!(files.len() >= 5, "fixtures missing: {files:?}");
    files
}

fn builder() -> Builder {
    let mut b = Builder::new();
    b.emit_rerun_if_changed(false).include_dir(idl_dir());
    b
}

#[test]
fn every_idl_file_generates_and_matches_its_snapshot() {
    for file in idl_files() {
        let compiled = builder()
            .check(&[&file])
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stem = file
            .strip_prefix(idl_dir())
            .unwrap()
            .with_extension("")
            .display()
            .to_string()
            .replace('/', "_");
        for out in compiled
            .rust_files()
            .into_iter()
            .chain(compiled.proto_files())
        {
            // The header names the file as given, which is an absolute path here; snapshots
            // must not depend on where the repository is checked out.
            let content = out
                .content
                .replace(&format!("{}/", idl_dir().display()), "idl/");
            insta::assert_snapshot!(format!("{stem}__{}", out.name), content);
        }
    }
}

#[test]
fn output_is_byte_identical_across_runs() {
    for file in idl_files() {
        let first = builder().generate(&[&file]).unwrap();
        let second = builder().generate(&[&file]).unwrap();
        assert_eq!(first, second, "{}", file.display());
    }
}

#[test]
fn unchanged_files_are_not_rewritten() {
    let dir = std::env::temp_dir().join(format!("svrkit-rewrite-{}", std::process::id()));
    let file = idl_dir().join("im/message.xml");
    builder().out_dir(&dir).compile(&[&file]).unwrap();
    let path = dir.join("im.message.rs");
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    builder().out_dir(&dir).compile(&[&file]).unwrap();
    let after = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(before, after, "compile rewrote an unchanged file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rust_modules_nest_packages() {
    let compiled = builder()
        .check(&[idl_dir().join("im/message.xml")])
        .unwrap();
    let tokens = compiled.rust_modules().to_string();
    assert!(
        tokens.starts_with("# [allow (missing_docs)] pub mod im {"),
        "{tokens:.80}"
    );
    assert!(tokens.contains("pub mod common") && tokens.contains("pub mod message"));
}

#[test]
fn ir_records_service_policies() {
    use svrkit_codegen::ir::{Priority, Retry};
    let compiled = builder()
        .check(&[idl_dir().join("im/message.xml")])
        .unwrap();
    let schema = compiled.schema();
    let svc = &schema.services[0];
    assert_eq!((svc.name.as_str(), svc.id), ("MessageSvr", 2001));
    let send = &svc.methods[0];
    assert_eq!(
        (send.timeout_ms, send.retry, send.priority),
        (200, Retry::None, Priority::High)
    );
    let fetch = &svc.methods[1];
    assert_eq!(fetch.retry, Retry::Idempotent { max_attempts: 3 });
    let ack = &svc.methods[2];
    assert_eq!(
        (ack.fn_name.as_str(), ack.response, ack.timeout_ms),
        ("ack", None, 500)
    );
}

/// The runtime checks in code generated from its own IDL files: it must be what the
/// generator makes of them now.
fn assert_checked_in(idl: &str, checked_in: &str, generated_name: &str) {
    let mut b = builder();
    b.base_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let files = b.generate(&[idl]).unwrap();
    let on_disk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(checked_in),
    )
    .unwrap();
    assert_eq!(
        files[0].content, on_disk,
        "regenerate with: cargo run --bin svrkit -- generate {idl} --out /tmp/g && cp /tmp/g/{generated_name} {checked_in}"
    );
}

#[test]
fn the_runtime_frame_header_is_generated_from_its_idl() {
    assert_checked_in(
        "idl/svrkit/frame.xml",
        "svrkit-runtime/src/frame/header.rs",
        "svrkit.frame.rs",
    );
}

#[test]
fn the_runtime_ossagent_stubs_are_generated_from_their_idl() {
    assert_checked_in(
        "idl/svrkit/ossagent.xml",
        "svrkit-runtime/src/monitor/ossagent.rs",
        "svrkit.ossagent.rs",
    );
}
