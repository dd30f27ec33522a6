//! The catalogue of IDL errors: one constructor per mistake, each with a stable code.
//!
//! Keeping every message here keeps them consistent and lets the snapshot tests in
//! `tests/diagnostics.rs` pin them down. Codes group by stage: `E00xx` XML and files,
//! `E01xx` names, `E02xx` structs and fields, `E03xx` enums, `E04xx` services.

use crate::ast::{self, Text};
use crate::diag::Diagnostic;
use crate::span::Span;
use crate::xml::{Attr, Element};

/// The closest of `candidates` to `wanted`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (wanted.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&wanted.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn malformed_xml(span: Span, what: &str) -> Diagnostic {
    Diagnostic::error("E0001", format!("malformed XML: {what}"), span).label("here")
}

pub(crate) fn wrong_root(name: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0002",
        format!(
            "the root element must be `<svrkit>`, found `<{}>`",
            name.value
        ),
        name.span,
    )
    .label("expected `svrkit`")
}

pub(crate) fn unknown_element(el: &Element, parent: &str, allowed: &[&str]) -> Diagnostic {
    let d = Diagnostic::error(
        "E0002",
        format!("unknown element `<{}>` in `<{parent}>`", el.name.value),
        el.name.span,
    )
    .label("not allowed here");
    let d = d.suggest(closest(&el.name.value, allowed.iter().copied()));
    if allowed.is_empty() {
        d.note(format!("`<{parent}>` takes no child elements"))
    } else {
        d.note(format!("`<{parent}>` may contain {}", list(allowed)))
    }
}

pub(crate) fn unknown_attribute(el: &Element, attr: &Attr, allowed: &[&str]) -> Diagnostic {
    let d = Diagnostic::error(
        "E0003",
        format!(
            "unknown attribute `{}` on `<{}>`",
            attr.name.value, el.name.value
        ),
        attr.name.span,
    )
    .label("unknown attribute")
    .suggest(closest(&attr.name.value, allowed.iter().copied()));
    if allowed.is_empty() {
        d.note(format!("`<{}>` takes no attributes", el.name.value))
    } else {
        d.note(format!("`<{}>` takes {}", el.name.value, list(allowed)))
    }
}

pub(crate) fn duplicate_attribute(attr: &Attr, first: &Attr) -> Diagnostic {
    Diagnostic::error(
        "E0003",
        format!("attribute `{}` is given twice", attr.name.value),
        attr.name.span,
    )
    .label("again here")
    .also(first.name.span, "first here")
}

pub(crate) fn missing_attribute(el: &Element, name: &str) -> Diagnostic {
    Diagnostic::error(
        "E0004",
        format!("`<{}>` needs the attribute `{name}`", el.name.value),
        el.span,
    )
    .label(format!("missing `{name}`"))
}

pub(crate) fn unexpected_text(el: &Element, text: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0005",
        format!("`<{}>` cannot contain text", el.name.value),
        text.span,
    )
    .label("unexpected text")
    .note("documentation goes in a `<doc>` element")
}

pub(crate) fn include_missing(file: &Text, looked: &[String]) -> Diagnostic {
    Diagnostic::error(
        "E0006",
        format!("included file `{}` not found", file.value),
        file.span,
    )
    .label("no such file")
    .note(format!("looked for: {}", looked.join(", ")))
}

pub(crate) fn include_unreadable(file: &Text, e: &std::io::Error) -> Diagnostic {
    Diagnostic::error(
        "E0006",
        format!("included file `{}` cannot be read: {e}", file.value),
        file.span,
    )
    .label("cannot be read")
}

pub(crate) fn include_cycle(file: &Text, chain: &[String]) -> Diagnostic {
    Diagnostic::error(
        "E0007",
        format!("including `{}` forms a cycle", file.value),
        file.span,
    )
    .label("this include leads back to a file that is still being read")
    .note(format!("cycle: {}", chain.join(" -> ")))
}

pub(crate) fn invalid_package(name: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0100",
        format!("invalid package name `{}`", name.value),
        name.span,
    )
    .label("expected dotted snake_case segments")
    .note("a package is like `im.message`; each segment becomes a Rust module")
}

pub(crate) fn invalid_identifier(name: &Text, what: &str, case: &str, example: &str) -> Diagnostic {
    Diagnostic::error(
        "E0101",
        format!("invalid {what} name `{}`", name.value),
        name.span,
    )
    .label(format!("{what} names are {case}"))
    .note(format!("for example `{example}`"))
}

pub(crate) fn reserved_field_name(name: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0101",
        "the field name `unknown_fields` is taken by the generated struct",
        name.span,
    )
    .label("reserved for the fields a schema does not know")
}

pub(crate) fn duplicate_type(name: &Text, first: Span) -> Diagnostic {
    Diagnostic::error(
        "E0102",
        format!("`{}` is defined more than once in this package", name.value),
        name.span,
    )
    .label("defined again here")
    .also(first, "first defined here")
}

pub(crate) fn rust_name_collision(
    name: &Text,
    rust: &str,
    first_idl: &str,
    first: Span,
) -> Diagnostic {
    Diagnostic::error(
        "E0103",
        format!("`{}` and `{first_idl}` both generate the Rust name `{rust}`", name.value),
        name.span,
    )
    .label(format!("generates `{rust}`"))
    .also(first, format!("`{first_idl}` generates it too"))
    .note("a service `S` generates `S`, `SClient` and `SServer`; a method `GetUrl` generates `get_url`, `get_url_with` and `get_url_weak`")
}

pub(crate) fn method_takes_constructor(name: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0103",
        format!(
            "method `{}` would generate the client function `new`",
            name.value
        ),
        name.span,
    )
    .label("the generated client's constructor is `new`")
    .note("rename the method, e.g. `Create`")
}

pub(crate) fn wire_name_collision(
    name: &Text,
    wire: &str,
    first_idl: &str,
    first: Span,
) -> Diagnostic {
    Diagnostic::error(
        "E0104",
        format!(
            "`{}` and `{first_idl}` would share the name `{wire}` in .proto or JSON",
            name.value
        ),
        name.span,
    )
    .label(format!("named `{wire}` in .proto or JSON"))
    .also(first, format!("`{first_idl}` is named so too"))
    .note("enum values are prefixed with the enum's name unless they start with it; field names are also read in lowerCamelCase (`a_1` and `a1` are both `a1`), which protoc compares ignoring case (`foo_bar` and `foobar` clash)")
}

pub(crate) fn protoc_enum_value_clash(name: &Text, key: &str, first: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0105",
        format!(
            "`{}` and `{}` are one enum value to protoc (`{key}`)",
            name.value, first.value
        ),
        name.span,
    )
    .label(format!("read as `{key}`"))
    .also(first.span, format!("`{}` is read so too", first.value))
    .note("protoc compares a value's name without the enum's name in front, ignoring case and underscores; rename one (e.g. `V_1` to `V_ONE`)")
}

pub(crate) fn enum_value_scope_clash(
    name: &Text,
    wire: &str,
    first: &Text,
    first_enum: &str,
) -> Diagnostic {
    Diagnostic::error(
        "E0106",
        format!(
            "`{}` is named `{wire}` in .proto, as a value of `{first_enum}` already is",
            name.value
        ),
        name.span,
    )
    .label(format!("named `{wire}` in .proto"))
    .also(first.span, format!("the value of `{first_enum}` named so"))
    .note("protobuf scopes enum values to the package, not to their enum (C++'s rules), so values of two enums of a package need distinct .proto names; rename one")
}

pub(crate) fn package_not_included(name: &Text, package: &str) -> Diagnostic {
    Diagnostic::error("E0200", format!("unknown type `{}`", name.value), name.span)
        .label(format!("package `{package}` is not included by this file"))
        .note(
            "types of another package need an `<include file=\"...\"/>` of a file of that package",
        )
}

pub(crate) fn unknown_type(name: &Text, candidates: &[String]) -> Diagnostic {
    Diagnostic::error("E0200", format!("unknown type `{}`", name.value), name.span)
        .label("not a scalar type or a struct or enum visible here")
        .suggest(closest(&name.value, candidates.iter().map(String::as_str)))
}

pub(crate) fn not_a_number(text: &Text, what: &str) -> Diagnostic {
    Diagnostic::error(
        "E0201",
        format!("{what} `{}` is not a number", text.value),
        text.span,
    )
    .label("expected a decimal integer")
}

pub(crate) fn out_of_range(text: &Text, what: &str, min: i64, max: i64) -> Diagnostic {
    Diagnostic::error(
        "E0202",
        format!("{what} {} is out of range", text.value.trim()),
        text.span,
    )
    .label(format!("must be from {min} to {max}"))
}

pub(crate) fn id_in_implementation_range(text: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0202",
        format!(
            "field id {} is in the reserved range 19000 to 19999",
            text.value
        ),
        text.span,
    )
    .label("reserved by the protobuf wire format")
}

pub(crate) fn id_reserved(text: &Text) -> Diagnostic {
    Diagnostic::error("E0203", format!("id {} is reserved", text.value), text.span)
        .label("listed in a `<reserved ids=...>`")
        .note("reserved ids belonged to removed fields; reusing one would misread old data")
}

pub(crate) fn name_reserved(text: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0203",
        format!("name `{}` is reserved", text.value),
        text.span,
    )
    .label("listed in a `<reserved names=...>`")
}

pub(crate) fn invalid_reserved(ids: &Text, part: &str) -> Diagnostic {
    Diagnostic::error(
        "E0204",
        format!("invalid reserved id or range `{part}`"),
        ids.span,
    )
    .label("expected a list like `2,6,11-15`")
}

pub(crate) fn duplicate_id(text: &Text, what: &str, first: Span) -> Diagnostic {
    Diagnostic::error(
        "E0205",
        format!("duplicate {what} {}", text.value.trim()),
        text.span,
    )
    .label("used again here")
    .also(first, "first used here")
}

pub(crate) fn duplicate_name(text: &Text, what: &str, first: Span) -> Diagnostic {
    Diagnostic::error(
        "E0206",
        format!("duplicate {what} name `{}`", text.value),
        text.span,
    )
    .label("used again here")
    .also(first, "first used here")
}

pub(crate) fn invalid_choice(text: &Text, attr: &str, choices: &[&str]) -> Diagnostic {
    Diagnostic::error(
        "E0207",
        format!("invalid {attr} `{}`", text.value),
        text.span,
    )
    .label(format!("expected one of {}", list(choices)))
    .suggest(closest(&text.value, choices.iter().copied()))
}

pub(crate) fn label_on_map(label: &Text) -> Diagnostic {
    Diagnostic::error("E0208", "a map field takes no label", label.span)
        .label("remove this label")
        .note("a map is already a collection; it cannot be optional or repeated")
}

pub(crate) fn map_needs_key_value(f: &ast::Field) -> Diagnostic {
    Diagnostic::error(
        "E0208",
        format!("map field `{}` needs both `key` and `value`", f.name.value),
        f.span,
    )
    .label("add key=\"...\" and value=\"...\"")
}

pub(crate) fn bad_map_key(key: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0209",
        format!("`{}` cannot be a map key", key.value),
        key.span,
    )
    .label("map keys are integer types, bool or string")
}

pub(crate) fn map_of_map(value: &Text) -> Diagnostic {
    Diagnostic::error("E0209", "a map value cannot be another map", value.span)
        .label("wrap the inner map in a struct")
}

pub(crate) fn key_value_without_map(attr: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0208",
        "`key` and `value` are only for `type=\"map\"`",
        attr.span,
    )
    .label("this field is not a map")
}

pub(crate) fn default_not_allowed(text: &Text, why: &str) -> Diagnostic {
    Diagnostic::error("E0210", "this field cannot have a default", text.span).label(why.to_owned())
}

pub(crate) fn bad_default(text: &Text, ty: &str) -> Diagnostic {
    Diagnostic::error(
        "E0210",
        format!("`{}` is not a valid {ty}", text.value),
        text.span,
    )
    .label("invalid default")
}

pub(crate) fn bad_enum_default(text: &Text, enum_name: &str, names: &[String]) -> Diagnostic {
    Diagnostic::error(
        "E0210",
        format!("`{}` is not a value of `{enum_name}`", text.value),
        text.span,
    )
    .label("unknown enum value")
    .suggest(closest(&text.value, names.iter().map(String::as_str)))
}

pub(crate) fn infinite_struct(span: Span, field: &str, cycle: &[&str]) -> Diagnostic {
    let mut path = cycle.join(" -> ");
    path.push_str(" -> ");
    path.push_str(cycle[0]);
    Diagnostic::error(
        "E0211",
        format!(
            "struct `{}` contains itself through singular fields",
            cycle[0]
        ),
        span,
    )
    .label(format!("field `{field}` is where the cycle starts"))
    .note(format!("cycle: {path}"))
    .note("make one field of the cycle optional or repeated")
}

pub(crate) fn not_a_struct(name: &Text, role: &str, what: &str) -> Diagnostic {
    Diagnostic::error(
        "E0400",
        format!("the {role} `{}` is {what}, not a struct", name.value),
        name.span,
    )
    .label(format!("{role}s must be structs"))
    .note("wrap the value in a struct so that fields can be added later")
}

pub(crate) fn oneway_with_response(r: &Text) -> Diagnostic {
    Diagnostic::error("E0401", "a oneway method has no response", r.span)
        .label("remove this response")
}

pub(crate) fn missing_response(m: &ast::Method) -> Diagnostic {
    Diagnostic::error(
        "E0401",
        format!("method `{}` needs a `response`", m.name.value),
        m.span,
    )
    .label("missing `response`")
    .note("a method without a response must say `oneway=\"true\"`")
}

pub(crate) fn status_classed_twice(word: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0403",
        format!("status `{}` is listed twice", word.value),
        word.span,
    )
    .label("a status goes in `faults` or in `caller_errors`, once")
}

pub(crate) fn max_attempts_without_retry(t: &Text) -> Diagnostic {
    Diagnostic::error(
        "E0402",
        "`max_attempts` needs `retry=\"idempotent\"`",
        t.span,
    )
    .label("a method that is not idempotent is never retried")
}
