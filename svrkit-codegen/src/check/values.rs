//! Reading numbers, reserved lists and doc text out of attribute strings.

use crate::ast::Text;
use crate::diag::Diagnostics;
use crate::error;
use crate::ir::Reserved;

/// Parses a decimal integer in `min..=max`; reports and returns `None` otherwise.
pub(super) fn integer(
    text: &Text,
    what: &str,
    min: i64,
    max: i64,
    diags: &mut Diagnostics,
) -> Option<i64> {
    match text.value.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        Ok(_) => {
            diags.push(error::out_of_range(text, what, min, max));
            None
        }
        Err(_) => {
            diags.push(error::not_a_number(text, what));
            None
        }
    }
}

/// The words of a list attribute (`"not_found, application"` or `"not_found application"`),
/// each with its own span when the attribute's text is what the file says (no entities),
/// so that an error points at the word.
pub(super) fn words(text: &Text) -> Vec<Text> {
    let exact = text.span.end - text.span.start == text.value.len();
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.value.char_indices().chain([(text.value.len(), ',')]) {
        let separator = c == ',' || c.is_whitespace();
        match (start, separator) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                let mut span = text.span;
                if exact {
                    span.start = text.span.start + s;
                    span.end = text.span.start + i;
                }
                out.push(Text {
                    value: text.value[s..i].to_owned(),
                    span,
                });
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Parses `"2,6,11-15"` and `names="a,b"` into ranges and names.
pub(super) fn reserved(
    list: &[crate::ast::Reserved],
    max: i64,
    diags: &mut Diagnostics,
) -> Reserved {
    let mut out = Reserved::default();
    for r in list {
        if let Some(ids) = &r.ids {
            for part in ids.value.split(',').map(str::trim) {
                let range = match part.split_once('-').filter(|(lo, _)| !lo.is_empty()) {
                    Some((lo, hi)) => lo
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .zip(hi.trim().parse::<i64>().ok()),
                    None => part.parse::<i64>().ok().map(|n| (n, n)),
                };
                match range {
                    Some((lo, hi)) if lo <= hi && hi <= max => out.ids.push((lo, hi)),
                    _ => diags.push(error::invalid_reserved(ids, part)),
                }
            }
        }
        if let Some(names) = &r.names {
            out.names.extend(
                names
                    .value
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    out
}

/// Normalises `<doc>` text: trims blank lines at both ends and the indentation all lines
/// share, so the XML's layout does not leak into rustdoc.
pub(super) fn doc(text: &Option<Text>) -> Option<String> {
    let text = text.as_ref()?;
    let lines: Vec<&str> = text.value.lines().collect();
    let first = lines.iter().position(|l| !l.trim().is_empty())?;
    let last = lines.iter().rposition(|l| !l.trim().is_empty())?;
    let lines = &lines[first..=last];
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let out: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                l[indent.min(l.len())..].trim_end()
            }
        })
        .collect();
    Some(out.join("\n"))
}
