//! Identifier rules and conversions, in one place.
//!
//! IDL names follow Rust's conventions directly (types `UpperCamel`, fields `snake_case`, enum
//! values `SCREAMING_SNAKE`), so generated names are the IDL names; only methods change case
//! (`SendMsg` -> `send_msg`). Rust keywords become raw identifiers (`r#type`).

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

/// Whether the name can be used as a Rust identifier at all (possibly raw).
pub(crate) fn is_usable(s: &str) -> bool {
    !NOT_RAW.contains(&s)
}

/// The Rust function name for an IDL method name (`GetURL` -> `get_url`).
pub(crate) fn method_fn_name(s: &str) -> String {
    s.to_snake_case()
}

/// The `SCREAMING_SNAKE` form of a type name, for constants derived from it.
pub(crate) fn screaming(s: &str) -> String {
    heck::ToShoutySnakeCase::to_shouty_snake_case(s)
}

/// An identifier token, raw if the name is a keyword.
pub(crate) fn ident(s: &str) -> Ident {
    if KEYWORDS.contains(&s) && is_usable(s) {
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
        assert!(!is_usable("self") && is_usable("type"));
    }
}
