//! Turns the XML tree of one file into its [`ast`](crate::ast), checking which elements and
//! attributes may appear where. Mistakes are reported and skipped, so one run finds them all.

use crate::ast::{self, Text};
use crate::diag::Diagnostics;
use crate::error;
use crate::span::FileId;
use crate::xml::{self, Element};

/// Parses the text of one IDL file. Returns `None` if the file is not usable at all
/// (malformed XML, wrong root); everything else is reported to `diags` and skipped.
pub(crate) fn parse_file(file: FileId, text: &str, diags: &mut Diagnostics) -> Option<ast::File> {
    let root = match xml::parse(file, text) {
        Ok(root) => root,
        Err(d) => {
            diags.push(*d);
            return None;
        }
    };
    if root.name.value != "svrkit" {
        diags.push(error::wrong_root(&root.name));
        return None;
    }
    let mut attrs = Attrs::new(&root, &["package"], diags);
    let package = attrs.required("package")?;
    let mut out = ast::File {
        id: file,
        package,
        includes: Vec::new(),
        include_dropped: false,
        doc: None,
        items: Vec::new(),
    };
    for child in &root.children {
        match child.name.value.as_str() {
            "include" => {
                let file = Attrs::new(child, &["file"], diags).required("file");
                no_children(child, diags);
                match file {
                    Some(file) => out.includes.push(ast::Include {
                        file,
                        resolved: None,
                    }),
                    None => out.include_dropped = true,
                }
            }
            "doc" => out.doc = doc_text(child, &mut out.doc, diags),
            "enum" => out
                .items
                .extend(parse_enum(child, diags).map(ast::Item::Enum)),
            "struct" => out
                .items
                .extend(parse_struct(child, diags).map(ast::Item::Struct)),
            "service" => out
                .items
                .extend(parse_service(child, diags).map(ast::Item::Service)),
            _ => unknown_child(
                child,
                "svrkit",
                &["include", "doc", "enum", "struct", "service"],
                diags,
            ),
        }
    }
    no_text(&root, diags);
    Some(out)
}

fn parse_enum(el: &Element, diags: &mut Diagnostics) -> Option<ast::Enum> {
    let name = Attrs::new(el, &["name"], diags).required("name");
    let mut out = ast::Enum {
        span: el.span,
        name: name?,
        doc: None,
        values: Vec::new(),
        reserved: Vec::new(),
    };
    for child in &el.children {
        match child.name.value.as_str() {
            "doc" => out.doc = doc_text(child, &mut out.doc, diags),
            "value" => {
                let mut a = Attrs::new(child, &["name", "id"], diags);
                let (name, id) = (a.required("name"), a.required("id"));
                let doc = doc_only(child, diags);
                if let (Some(name), Some(id)) = (name, id) {
                    out.values.push(ast::EnumValue {
                        span: child.span,
                        name,
                        id,
                        doc,
                    });
                }
            }
            "reserved" => out.reserved.extend(parse_reserved(child, diags)),
            _ => unknown_child(child, "enum", &["doc", "value", "reserved"], diags),
        }
    }
    no_text(el, diags);
    Some(out)
}

fn parse_struct(el: &Element, diags: &mut Diagnostics) -> Option<ast::Struct> {
    let name = Attrs::new(el, &["name"], diags).required("name");
    let mut out = ast::Struct {
        span: el.span,
        name: name?,
        doc: None,
        fields: Vec::new(),
        reserved: Vec::new(),
    };
    for child in &el.children {
        match child.name.value.as_str() {
            "doc" => out.doc = doc_text(child, &mut out.doc, diags),
            "field" => {
                let mut a = Attrs::new(
                    child,
                    &["id", "name", "type", "label", "default", "key", "value"],
                    diags,
                );
                let (id, name, ty) = (a.required("id"), a.required("name"), a.required("type"));
                let (label, default) = (a.optional("label"), a.optional("default"));
                let (key, value) = (a.optional("key"), a.optional("value"));
                let doc = doc_only(child, diags);
                if let (Some(id), Some(name), Some(ty)) = (id, name, ty) {
                    out.fields.push(ast::Field {
                        span: child.span,
                        id,
                        name,
                        ty,
                        label,
                        default,
                        key,
                        value,
                        doc,
                    });
                }
            }
            "reserved" => out.reserved.extend(parse_reserved(child, diags)),
            _ => unknown_child(child, "struct", &["doc", "field", "reserved"], diags),
        }
    }
    no_text(el, diags);
    Some(out)
}

fn parse_reserved(el: &Element, diags: &mut Diagnostics) -> Option<ast::Reserved> {
    let (ids, names) = {
        let mut a = Attrs::new(el, &["ids", "names"], diags);
        (a.optional("ids"), a.optional("names"))
    };
    no_children(el, diags);
    if ids.is_none() && names.is_none() {
        diags.push(error::missing_attribute(el, "ids` or `names"));
        return None;
    }
    Some(ast::Reserved { ids, names })
}

fn parse_service(el: &Element, diags: &mut Diagnostics) -> Option<ast::Service> {
    let mut a = Attrs::new(el, &["name", "id", "timeout_ms"], diags);
    let (name, id, timeout_ms) = (
        a.required("name"),
        a.required("id"),
        a.optional("timeout_ms"),
    );
    let mut methods = Vec::new();
    let mut doc = None;
    for child in &el.children {
        match child.name.value.as_str() {
            "doc" => doc = doc_text(child, &mut doc, diags),
            "method" => methods.extend(parse_method(child, diags)),
            _ => unknown_child(child, "service", &["doc", "method"], diags),
        }
    }
    no_text(el, diags);
    Some(ast::Service {
        span: el.span,
        name: name?,
        id: id?,
        timeout_ms,
        doc,
        methods,
    })
}

fn parse_method(el: &Element, diags: &mut Diagnostics) -> Option<ast::Method> {
    let mut a = Attrs::new(
        el,
        &[
            "name",
            "id",
            "request",
            "response",
            "timeout_ms",
            "retry",
            "max_attempts",
            "priority",
            "oneway",
            "long_poll",
            "faults",
            "caller_errors",
        ],
        diags,
    );
    let (name, id, request) = (a.required("name"), a.required("id"), a.required("request"));
    let method = ast::Method {
        span: el.span,
        name: name?,
        id: id?,
        request: request?,
        response: a.optional("response"),
        timeout_ms: a.optional("timeout_ms"),
        retry: a.optional("retry"),
        max_attempts: a.optional("max_attempts"),
        priority: a.optional("priority"),
        oneway: a.optional("oneway"),
        long_poll: a.optional("long_poll"),
        faults: a.optional("faults"),
        caller_errors: a.optional("caller_errors"),
        doc: doc_only(el, diags),
    };
    Some(method)
}

/// Reads the attributes of one element against the list it may have.
struct Attrs<'a, 'd> {
    el: &'a Element,
    diags: &'d mut Diagnostics,
}

impl<'a, 'd> Attrs<'a, 'd> {
    fn new(el: &'a Element, allowed: &[&str], diags: &'d mut Diagnostics) -> Attrs<'a, 'd> {
        for (i, attr) in el.attrs.iter().enumerate() {
            if !allowed.contains(&attr.name.value.as_str()) {
                diags.push(error::unknown_attribute(el, attr, allowed));
            } else if let Some(first) = el.attrs[..i]
                .iter()
                .find(|a| a.name.value == attr.name.value)
            {
                diags.push(error::duplicate_attribute(attr, first));
            }
        }
        Attrs { el, diags }
    }

    fn required(&mut self, name: &str) -> Option<Text> {
        let found = self.optional(name);
        if found.is_none() {
            self.diags.push(error::missing_attribute(self.el, name));
        }
        found
    }

    fn optional(&mut self, name: &str) -> Option<Text> {
        self.el.attr(name).map(|a| a.value.clone())
    }
}

/// The text of a `<doc>` element, appended to any earlier `<doc>` of the same parent.
fn doc_text(el: &Element, previous: &mut Option<Text>, diags: &mut Diagnostics) -> Option<Text> {
    Attrs::new(el, &[], diags);
    children_none(el, diags);
    let text = el.text.clone()?;
    Some(match previous.take() {
        Some(mut before) => {
            before.value.push_str("\n\n");
            before.value.push_str(&text.value);
            before
        }
        None => text,
    })
}

/// For elements whose only child may be `<doc>`.
fn doc_only(el: &Element, diags: &mut Diagnostics) -> Option<Text> {
    let mut doc = None;
    for child in &el.children {
        match child.name.value.as_str() {
            "doc" => doc = doc_text(child, &mut doc, diags),
            _ => unknown_child(child, &el.name.value, &["doc"], diags),
        }
    }
    no_text(el, diags);
    doc
}

/// For elements that take neither child elements nor text.
fn no_children(el: &Element, diags: &mut Diagnostics) {
    children_none(el, diags);
    no_text(el, diags);
}

fn children_none(el: &Element, diags: &mut Diagnostics) {
    for child in &el.children {
        unknown_child(child, &el.name.value, &[], diags);
    }
}

fn no_text(el: &Element, diags: &mut Diagnostics) {
    if let Some(text) = &el.text
        && !text.value.trim().is_empty()
    {
        diags.push(error::unexpected_text(el, text));
    }
}

fn unknown_child(child: &Element, parent: &str, allowed: &[&str], diags: &mut Diagnostics) {
    diags.push(error::unknown_element(child, parent, allowed));
}
