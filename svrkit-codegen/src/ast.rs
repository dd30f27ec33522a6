//! The syntax tree of one IDL file, as written: names and numbers are still text with spans.
//!
//! [`crate::parse`] builds it from XML and checks only its shape (which elements and
//! attributes exist); [`crate::check`] resolves and validates it into the [IR](crate::ir).

use crate::span::{FileId, Span};
pub(crate) use crate::xml::Spanned;

/// Text with a span.
pub(crate) type Text = Spanned<String>;

/// One parsed IDL file.
#[derive(Clone, Debug)]
pub(crate) struct File {
    /// The file.
    pub(crate) id: FileId,
    /// `package="im.message"`.
    pub(crate) package: Text,
    /// `<include file=".."/>` elements.
    pub(crate) includes: Vec<Include>,
    /// An `<include>` without a file was dropped: the types it would bring in are unknown,
    /// so checking the file would only report that again.
    pub(crate) include_dropped: bool,
    /// `<doc>` of the file.
    pub(crate) doc: Option<Text>,
    /// Enums, structs and services, in source order.
    pub(crate) items: Vec<Item>,
}

/// `<include file="common.xml"/>`.
#[derive(Clone, Debug)]
pub(crate) struct Include {
    /// The path as written.
    pub(crate) file: Text,
    /// The file it resolved to, once loaded.
    pub(crate) resolved: Option<FileId>,
}

/// A top-level definition.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    /// `<enum>`.
    Enum(Enum),
    /// `<struct>`.
    Struct(Struct),
    /// `<service>`.
    Service(Service),
}

/// `<enum name="..">`.
#[derive(Clone, Debug)]
pub(crate) struct Enum {
    /// The start tag.
    pub(crate) span: Span,
    /// Name.
    pub(crate) name: Text,
    /// Documentation.
    pub(crate) doc: Option<Text>,
    /// Values in source order.
    pub(crate) values: Vec<EnumValue>,
    /// `<reserved>` elements.
    pub(crate) reserved: Vec<Reserved>,
}

/// `<value name=".." id=".."/>`.
#[derive(Clone, Debug)]
pub(crate) struct EnumValue {
    /// The start tag.
    pub(crate) span: Span,
    /// Name.
    pub(crate) name: Text,
    /// Number, as written.
    pub(crate) id: Text,
    /// Documentation.
    pub(crate) doc: Option<Text>,
}

/// `<struct name="..">`.
#[derive(Clone, Debug)]
pub(crate) struct Struct {
    /// The start tag.
    pub(crate) span: Span,
    /// Name.
    pub(crate) name: Text,
    /// Documentation.
    pub(crate) doc: Option<Text>,
    /// Fields in source order.
    pub(crate) fields: Vec<Field>,
    /// `<reserved>` elements.
    pub(crate) reserved: Vec<Reserved>,
}

/// `<field .../>`.
#[derive(Clone, Debug)]
pub(crate) struct Field {
    /// The start tag.
    pub(crate) span: Span,
    /// Field id, as written.
    pub(crate) id: Text,
    /// Name.
    pub(crate) name: Text,
    /// Type, as written.
    pub(crate) ty: Text,
    /// `label`.
    pub(crate) label: Option<Text>,
    /// `default`.
    pub(crate) default: Option<Text>,
    /// `key` (maps).
    pub(crate) key: Option<Text>,
    /// `value` (maps).
    pub(crate) value: Option<Text>,
    /// Documentation.
    pub(crate) doc: Option<Text>,
}

/// `<reserved ids="2,6,11-15" names="old_name"/>`.
#[derive(Clone, Debug)]
pub(crate) struct Reserved {
    /// `ids`, as written.
    pub(crate) ids: Option<Text>,
    /// `names`, as written.
    pub(crate) names: Option<Text>,
}

/// `<service name=".." id="..">`.
#[derive(Clone, Debug)]
pub(crate) struct Service {
    /// The start tag.
    pub(crate) span: Span,
    /// Name.
    pub(crate) name: Text,
    /// Service id, as written.
    pub(crate) id: Text,
    /// `timeout_ms` default for its methods.
    pub(crate) timeout_ms: Option<Text>,
    /// Documentation.
    pub(crate) doc: Option<Text>,
    /// Methods in source order.
    pub(crate) methods: Vec<Method>,
}

/// `<method .../>`.
#[derive(Clone, Debug)]
pub(crate) struct Method {
    /// The start tag.
    pub(crate) span: Span,
    /// Name.
    pub(crate) name: Text,
    /// Method id, as written.
    pub(crate) id: Text,
    /// Request struct.
    pub(crate) request: Text,
    /// Response struct (absent for oneway methods).
    pub(crate) response: Option<Text>,
    /// `timeout_ms`.
    pub(crate) timeout_ms: Option<Text>,
    /// `retry`.
    pub(crate) retry: Option<Text>,
    /// `max_attempts`.
    pub(crate) max_attempts: Option<Text>,
    /// `priority`.
    pub(crate) priority: Option<Text>,
    /// `oneway`.
    pub(crate) oneway: Option<Text>,
    /// `long_poll`.
    pub(crate) long_poll: Option<Text>,
    /// `faults`: status names counted as the server's faults.
    pub(crate) faults: Option<Text>,
    /// `caller_errors`: status names counted as the caller's errors.
    pub(crate) caller_errors: Option<Text>,
    /// Documentation.
    pub(crate) doc: Option<Text>,
}
