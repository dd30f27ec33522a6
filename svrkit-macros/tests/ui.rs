//! `idl!` as a user meets it: files that compile and use the generated code, and IDL errors
//! that must surface as one clear compile error.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
