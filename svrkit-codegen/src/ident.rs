//! Identifier rules and conversions, in one place.
//!
//! IDL names follow Rust's conventions directly (types `UpperCamel`, fields `snake_case`, enum
//! values `SCREAMING_SNAKE`), so generated names are the IDL names; only methods change case
//! (`SendMsg` -> `send_msg`). Rust keywords become raw identifiers (`r#type`); the few that
//! cannot be raw (`self`, `super`, `crate`, `Self`) get a trailing underscore (`self_`), as
//! prost does, so that a schema written elsewhere is never blocked by Rust's keyword list.
//! Wire names (field names in errors, JSON, `.proto`) stay as written. A valid IDL name never
//! ends in `_`, so the suffix cannot make two names collide.

use heck::ToSnakeCase;
use proc_macro2::{Ident, Span};

/// Words that are keywords in some Rust edition (strict or reserved).
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Keywords that cannot be raw identifiers either.
const NOT_RAW: &[&str] = &["self", "Self", "super", "crate", "_"];

/// `UpperCamel`: a capital letter, then letters and digits.
pub(crate) fn is_upper_camel(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// `snake_case`: lowercase words of letters and digits joined by single underscores.
pub(crate) fn is_snake_case(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.split('_').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// `SCREAMING_SNAKE`: uppercase words of letters and digits joined by single underscores.
pub(crate) fn is_screaming_snake(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.split('_').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
}

/// The Rust spelling of an IDL name, as [`ident`] emits it (`type` -> `r#type`,
/// `self` -> `self_`): what two names must not share.
pub(crate) fn rust_name(s: &str) -> String {
    if NOT_RAW.contains(&s) {
        format!("{s}_")
    } else {
        s.to_owned()
    }
}

/// The Rust function name for an IDL method name (`GetURL` -> `get_url`).
pub(crate) fn method_fn_name(s: &str) -> String {
    s.to_snake_case()
}

/// protobuf's JSON name of a field: lowerCamelCase (`from_user` -> `fromUser`), which JSON
/// readers accept beside the name as written.
pub(crate) fn json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The `SCREAMING_SNAKE` form of a type name, for constants derived from it.
pub(crate) fn screaming(s: &str) -> String {
    heck::ToShoutySnakeCase::to_shouty_snake_case(s)
}

/// An identifier token: raw if the name is a keyword, with a trailing `_` if it is one that
/// cannot be raw.
pub(crate) fn ident(s: &str) -> Ident {
    if NOT_RAW.contains(&s) {
        Ident::new(&rust_name(s), Span::call_site())
    } else if KEYWORDS.contains(&s) {
        Ident::new_raw(s, Span::call_site())
    } else {
        Ident::new(s, Span::call_site())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        assert!(is_upper_camel("MessageSvr") && is_upper_camel("V2") && !is_upper_camel("message"));
        assert!(!is_upper_camel("Msg_Type"));
        assert!(is_snake_case("from_user") && is_snake_case("a1_b2"));
        assert!(!is_snake_case("fromUser") && !is_snake_case("a__b") && !is_snake_case("_a"));
        assert!(!is_snake_case("a_"));
        assert!(is_screaming_snake("TEXT") && is_screaming_snake("MSG_TYPE_2"));
        assert!(!is_screaming_snake("Text") && !is_screaming_snake("A__B"));
    }

    #[test]
    fn conversions() {
        assert_eq!(method_fn_name("GetURL"), method_fn_name("GetUrl"));
        assert_eq!(method_fn_name("SendMsg"), "send_msg");
        assert_eq!(screaming("MessageSvr"), "MESSAGE_SVR");
        assert_eq!(ident("type").to_string(), "r#type");
        assert_eq!(ident("from_user").to_string(), "from_user");
        assert_eq!(ident("self").to_string(), "self_");
        assert_eq!(ident("Self").to_string(), "Self_");
        assert_eq!(ident("crate").to_string(), "crate_");
        assert_eq!(rust_name("super"), "super_");
    }
}
