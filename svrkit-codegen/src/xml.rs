//! Reads XML with quick-xml into a small element tree that keeps a span on every element,
//! attribute name and attribute value.
//!
//! The IDL layer ([`crate::parse`]) then reads the tree with its schema in mind. Keeping the
//! two apart means the XML details (entities, comments, declarations) stay here.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::diag::Diagnostic;
use crate::error;
use crate::span::{FileId, Span};

/// A string with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spanned<T> {
    /// The value.
    pub(crate) value: T,
    /// Where it is.
    pub(crate) span: Span,
}

/// One attribute: `name="value"`.
#[derive(Clone, Debug)]
pub(crate) struct Attr {
    /// The name.
    pub(crate) name: Spanned<String>,
    /// The unescaped value; the span covers the raw text between the quotes.
    pub(crate) value: Spanned<String>,
}

/// One element with its attributes, child elements and text.
#[derive(Clone, Debug)]
pub(crate) struct Element {
    /// The tag name.
    pub(crate) name: Spanned<String>,
    /// The whole start tag, `<` to `>`.
    pub(crate) span: Span,
    /// Attributes in source order.
    pub(crate) attrs: Vec<Attr>,
    /// Child elements in source order.
    pub(crate) children: Vec<Element>,
    /// Text content (entities resolved), with the span of its first piece.
    pub(crate) text: Option<Spanned<String>>,
}

impl Element {
    /// The attribute called `name`.
    pub(crate) fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name.value == name)
    }
}

/// Offset of `part` inside `text`, when `part` borrows from it.
fn offset_in(text: &str, part: &str) -> Option<usize> {
    let base = text.as_ptr() as usize;
    let at = part.as_ptr() as usize;
    (at >= base && at + part.len() <= base + text.len()).then(|| at - base)
}

/// Parses `text` into its root element.
///
/// # Errors
/// Malformed XML yields one diagnostic at the position quick-xml stopped at.
pub(crate) fn parse(file: FileId, text: &str) -> Result<Element, Box<Diagnostic>> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let span = |range: std::ops::Range<usize>| Span::new(file, range);
    loop {
        let start = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let at = (reader.error_position() as usize).min(text.len());
                return Err(bad(span(at..at), &e.to_string()));
            }
        };
        let end = reader.buffer_position() as usize;
        match event {
            Event::Start(tag) | Event::Empty(tag) if root.is_some() && stack.is_empty() => {
                let name = tag.name().as_ref().to_owned();
                return Err(bad(
                    span(start..end),
                    &format!("a second root element `<{name}>` after the first one ended"),
                ));
            }
            Event::Start(tag) => stack.push(element(file, text, &tag, start..end)?),
            Event::Empty(tag) => {
                let el = element(file, text, &tag, start..end)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches its start.
                let Some(el) = stack.pop() else {
                    return Err(bad(span(start..end), "unexpected end tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let content = t.xml_content(XmlVersion::Implicit1_0);
                push_text(&mut stack, &content, span(start..end), root.is_some())?;
            }
            Event::CData(t) => {
                let content = t.xml_content(XmlVersion::Implicit1_0);
                push_text(&mut stack, &content, span(start..end), root.is_some())?;
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(bad(span(start..end), "invalid character reference")),
                    }
                } else {
                    match predefined_entity(&r.xml_content(XmlVersion::Implicit1_0)) {
                        Some(s) => s.to_owned(),
                        None => {
                            return Err(bad(
                                span(start..end),
                                "unknown entity (only &amp; &lt; &gt; &quot; &apos; are defined)",
                            ));
                        }
                    }
                };
                push_text(&mut stack, &resolved, span(start..end), root.is_some())?;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(bad(
            open.span,
            &format!("`<{}>` is never closed", open.name.value),
        ));
    }
    root.ok_or_else(|| bad(span(0..0), "the file has no root element"))
}

/// Errors here are rare and end the file, so they are boxed to keep the `Ok` path small.
fn bad(span: Span, what: &str) -> Box<Diagnostic> {
    Box::new(error::malformed_xml(span, what))
}

fn predefined_entity(name: &str) -> Option<&'static str> {
    Some(match name {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        _ => return None,
    })
}

fn push_text(
    stack: &mut [Element],
    content: &str,
    at: Span,
    after_root: bool,
) -> Result<(), Box<Diagnostic>> {
    match stack.last_mut() {
        Some(el) => match &mut el.text {
            Some(text) => text.value.push_str(content),
            None => {
                // Point at the words, not the whitespace around them.
                let lead = content.len() - content.trim_start().len();
                let len = content.trim().len();
                let start = (at.start + lead).min(at.end);
                let span = Span {
                    start,
                    end: (start + len).min(at.end),
                    ..at
                };
                el.text = Some(Spanned {
                    value: content.to_owned(),
                    span,
                });
            }
        },
        None if content.trim().is_empty() => {}
        None => {
            // Underline the first line of the stray text, not all of it.
            let lead = content.len() - content.trim_start().len();
            let first_line = content.trim_start().lines().next().unwrap_or("").len();
            let start = (at.start + lead).min(at.end);
            let span = Span {
                start,
                end: (start + first_line).min(at.end),
                ..at
            };
            let what = if after_root { "after" } else { "before" };
            return Err(bad(span, &format!("text {what} the root element")));
        }
    }
    Ok(())
}

fn element(
    file: FileId,
    text: &str,
    tag: &BytesStart<'_>,
    range: std::ops::Range<usize>,
) -> Result<Element, Box<Diagnostic>> {
    let span = |r: std::ops::Range<usize>| Span::new(file, r);
    let raw: &str = tag;
    let name_str = tag.name().as_ref().to_owned();
    // `raw` is the tag's content after `<`, borrowed from `text`.
    let name_start = offset_in(text, raw).unwrap_or(range.start + 1);
    let name = Spanned {
        value: name_str.clone(),
        span: span(name_start..name_start + name_str.len()),
    };
    let mut attrs = Vec::new();
    for attr in tag.attributes() {
        let attr = attr.map_err(|e| {
            bad(
                span(range.clone()),
                &format!("in the attributes of `<{name_str}>`: {e}"),
            )
        })?;
        let key = attr.key.as_ref().to_owned();
        let key_at = offset_in(text, attr.key.as_ref()).unwrap_or(range.start);
        let value_range = match &attr.value {
            Cow::Borrowed(v) => offset_in(text, v).map(|at| at..at + v.len()),
            Cow::Owned(_) => None,
        }
        .unwrap_or(key_at..key_at + key.len());
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| {
                bad(
                    span(value_range.clone()),
                    &format!("in attribute `{key}`: {e}"),
                )
            })?;
        attrs.push(Attr {
            name: Spanned {
                value: key.clone(),
                span: span(key_at..key_at + key.len()),
            },
            value: Spanned {
                value: value.into_owned(),
                span: span(value_range),
            },
        });
    }
    Ok(Element {
        name,
        span: span(range),
        attrs,
        children: Vec::new(),
        text: None,
    })
}
