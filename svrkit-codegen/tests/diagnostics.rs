//! Every kind of IDL mistake gets a clear, located error. Each fixture in `diagnostics/` is
//! compiled and its rendered report (file:line:col, source line, caret) is snapshot-tested.

use std::path::Path;

use svrkit_codegen::{Builder, Error};

fn render(fixture: &str) -> String {
    let path = Path::new("tests/diagnostics").join(fixture);
    match Builder::new().emit_rerun_if_changed(false).check(&[&path]) {
        Ok(_) => panic!("{fixture} compiled without errors"),
        Err(Error::Idl(report)) => report.render(false),
        Err(other) => panic!("{fixture}: unexpected error {other}"),
    }
}

macro_rules! diagnostics {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                insta::assert_snapshot!(render(concat!(stringify!($name), ".xml")));
            }
        )*
    };
}

diagnostics!(
    malformed_xml,
    wrong_root,
    text_in_struct,
    text_outside_root,
    unknown_element,
    unknown_attribute,
    missing_attribute,
    duplicate_field_id,
    duplicate_field_name,
    duplicate_enum_value,
    duplicate_method_id,
    duplicate_service_id,
    id_out_of_range,
    id_reserved,
    unknown_type,
    map_types,
    bad_default,
    request_not_struct,
    include_missing,
    include_cycle,
    invalid_identifier,
    rust_name_collision,
    wire_name_collision,
    protoc_name_rules,
    infinite_struct,
    error_classes,
    every_stage,
);

#[test]
fn errors_of_every_stage_are_reported_in_one_run() {
    // Two mistakes the parser finds (unknown attributes) and three the checker finds
    // (a duplicate field id, an unknown type, a duplicate enum value): all five at once.
    let report = render("every_stage.xml");
    assert_eq!(report.matches("error[").count(), 5, "{report}");
}

#[test]
fn every_error_of_a_run_is_reported() {
    // `bad_default.xml` has seven mistakes; all seven are reported, not only the first.
    let report = render("bad_default.xml");
    assert_eq!(report.matches("error[").count(), 7, "{report}");
}

#[test]
fn a_missing_root_file_is_an_io_error() {
    let err = Builder::new()
        .check(&["tests/diagnostics/nope.xml"])
        .err()
        .unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}
