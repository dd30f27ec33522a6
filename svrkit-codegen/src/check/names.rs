//! Identifier checks shared by the passes.

use crate::ast::Text;
use crate::diag::Diagnostics;
use crate::error;
use crate::ident;

/// A package is dotted `snake_case` segments.
pub(super) fn check_package_name(name: &Text, diags: &mut Diagnostics) {
    let ok = name.value.split('.').all(ident::is_snake_case);
    if !ok {
        diags.push(error::invalid_package(name));
    }
}

/// Structs, enums, services and methods are `UpperCamel`.
pub(super) fn check_type_name(name: &Text, what: &str, diags: &mut Diagnostics) -> bool {
    if !ident::is_upper_camel(&name.value) {
        diags.push(error::invalid_identifier(
            name,
            what,
            "UpperCamelCase",
            "MessageSvr",
        ));
        return false;
    }
    true
}

/// Fields are `snake_case`.
pub(super) fn check_field_name(name: &Text, diags: &mut Diagnostics) -> bool {
    if !ident::is_snake_case(&name.value) {
        diags.push(error::invalid_identifier(
            name,
            "field",
            "snake_case",
            "from_user",
        ));
        return false;
    }
    if name.value == "unknown_fields" {
        diags.push(error::reserved_field_name(name));
        return false;
    }
    true
}

/// Enum values are `SCREAMING_SNAKE`.
pub(super) fn check_enum_value_name(name: &Text, diags: &mut Diagnostics) -> bool {
    if !ident::is_screaming_snake(&name.value) {
        diags.push(error::invalid_identifier(
            name,
            "enum value",
            "SCREAMING_SNAKE_CASE",
            "TEXT",
        ));
        return false;
    }
    true
}
