//! The checked intermediate representation: what every generator reads.
//!
//! A [`Schema`] is only ever built by [`crate::check`], after every rule of the IDL held, so
//! generators can rely on it: names are resolved to ids, numbers are in range, there are no
//! duplicates, and struct cycles are broken by boxing. Everything is in declaration order, so
//! output built from it is deterministic.

use crate::span::Span;

/// Index of a struct in [`Schema::structs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StructId(pub usize);
/// Index of an enum in [`Schema::enums`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnumId(pub usize);
/// Index of a package in [`Schema::packages`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageId(pub usize);

/// Everything compiled together: the requested files and all they include.
///
/// Only the checker constructs one (`non_exhaustive`), so holding a `Schema` means every IDL
/// rule held.
#[derive(Debug)]
#[non_exhaustive]
pub struct Schema {
    /// Packages, in the order they were first seen.
    pub packages: Vec<Package>,
    /// All structs.
    pub structs: Vec<Struct>,
    /// All enums.
    pub enums: Vec<Enum>,
    /// All services.
    pub services: Vec<Service>,
}

/// A dotted package; generated as nested modules.
#[derive(Debug)]
pub struct Package {
    /// `im.message`.
    pub name: String,
    /// The display names of the files that define it.
    pub files: Vec<String>,
    /// The `<doc>` of each of those files that has one, in file order.
    pub doc: Vec<String>,
    /// What it defines, in declaration order.
    pub items: Vec<Item>,
}

impl Package {
    /// The module path segments (`["im", "message"]`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.name.split('.')
    }
}

/// A definition in a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// A struct.
    Struct(StructId),
    /// An enum.
    Enum(EnumId),
    /// A service (index into [`Schema::services`]).
    Service(usize),
}

/// A `<struct>`.
#[derive(Debug)]
pub struct Struct {
    /// Its package.
    pub package: PackageId,
    /// `Message`.
    pub name: String,
    /// `im.message.Message`.
    pub full_name: String,
    /// Documentation.
    pub doc: Option<String>,
    /// Fields, in id order (the order they are encoded in).
    pub fields: Vec<Field>,
    /// Reserved ids and names.
    pub reserved: Reserved,
    /// The start tag.
    pub span: Span,
}

/// A `<field>`.
#[derive(Debug)]
pub struct Field {
    /// The field id.
    pub id: u32,
    /// `snake_case` name.
    pub name: String,
    /// Documentation.
    pub doc: Option<String>,
    /// Type and label.
    pub ty: FieldType,
    /// `default`, when given (only on singular scalars and enums).
    pub default: Option<DefaultValue>,
    /// Whether an optional struct field is boxed because the struct contains itself.
    pub boxed: bool,
    /// The start tag.
    pub span: Span,
}

/// A field's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldType {
    /// No label: a plain value, left off the wire at its default.
    Singular(ValueType),
    /// `label="optional"`: presence tracked (`Option`).
    Optional(ValueType),
    /// `label="repeated"`: a list.
    Repeated(ValueType),
    /// `type="map"`.
    Map(Scalar, ValueType),
}

impl FieldType {
    /// The element type (the value type for maps).
    pub fn value(&self) -> ValueType {
        match *self {
            FieldType::Singular(v) | FieldType::Optional(v) | FieldType::Repeated(v) => v,
            FieldType::Map(_, v) => v,
        }
    }
}

/// The type of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// A scalar.
    Scalar(Scalar),
    /// An enum.
    Enum(EnumId),
    /// A struct.
    Struct(StructId),
}

/// The IDL's scalar types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Scalar {
    Bool,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Float,
    Double,
    String,
    Bytes,
}

impl Scalar {
    /// Every scalar, for lookups and suggestions.
    pub const ALL: [Scalar; 15] = [
        Scalar::Bool,
        Scalar::Int32,
        Scalar::Int64,
        Scalar::Uint32,
        Scalar::Uint64,
        Scalar::Sint32,
        Scalar::Sint64,
        Scalar::Fixed32,
        Scalar::Fixed64,
        Scalar::Sfixed32,
        Scalar::Sfixed64,
        Scalar::Float,
        Scalar::Double,
        Scalar::String,
        Scalar::Bytes,
    ];

    /// The IDL spelling.
    pub fn name(self) -> &'static str {
        match self {
            Scalar::Bool => "bool",
            Scalar::Int32 => "int32",
            Scalar::Int64 => "int64",
            Scalar::Uint32 => "uint32",
            Scalar::Uint64 => "uint64",
            Scalar::Sint32 => "sint32",
            Scalar::Sint64 => "sint64",
            Scalar::Fixed32 => "fixed32",
            Scalar::Fixed64 => "fixed64",
            Scalar::Sfixed32 => "sfixed32",
            Scalar::Sfixed64 => "sfixed64",
            Scalar::Float => "float",
            Scalar::Double => "double",
            Scalar::String => "string",
            Scalar::Bytes => "bytes",
        }
    }

    /// The scalar with this IDL spelling.
    pub fn from_name(name: &str) -> Option<Scalar> {
        Scalar::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether this type may be a map key (integers, bool, string).
    pub fn is_map_key(self) -> bool {
        !matches!(self, Scalar::Float | Scalar::Double | Scalar::Bytes)
    }

    /// Whether lists of this type are packed.
    pub fn is_packable(self) -> bool {
        !matches!(self, Scalar::String | Scalar::Bytes)
    }
}

/// A field's declared default.
#[derive(Clone, Debug, PartialEq)]
pub enum DefaultValue {
    /// `bool`.
    Bool(bool),
    /// Signed integers.
    Int(i64),
    /// Unsigned integers.
    Uint(u64),
    /// `float` and `double` (a `float` default is stored widened and is exact).
    Float(f64),
    /// `string`.
    String(String),
    /// `bytes`, given as text.
    Bytes(Vec<u8>),
    /// A value of the field's enum.
    Enum {
        /// The value's name.
        name: String,
        /// Its number.
        number: i32,
    },
}

impl DefaultValue {
    /// Whether this equals the type's zero value (then the field behaves as if no default
    /// were given).
    pub fn is_zero(&self) -> bool {
        match self {
            DefaultValue::Bool(b) => !b,
            DefaultValue::Int(i) => *i == 0,
            DefaultValue::Uint(u) => *u == 0,
            DefaultValue::Float(f) => f.to_bits() == 0,
            DefaultValue::String(s) => s.is_empty(),
            DefaultValue::Bytes(b) => b.is_empty(),
            DefaultValue::Enum { number, .. } => *number == 0,
        }
    }
}

/// Ids and names a struct or enum may not use again.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reserved {
    /// Inclusive ranges of ids.
    pub ids: Vec<(i64, i64)>,
    /// Names.
    pub names: Vec<String>,
}

impl Reserved {
    /// Whether `id` is reserved.
    pub fn has_id(&self, id: i64) -> bool {
        self.ids.iter().any(|&(lo, hi)| (lo..=hi).contains(&id))
    }

    /// Whether `name` is reserved.
    pub fn has_name(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

/// An `<enum>`: an open set of `i32` values.
#[derive(Debug)]
pub struct Enum {
    /// Its package.
    pub package: PackageId,
    /// `MsgType`.
    pub name: String,
    /// `im.message.MsgType`.
    pub full_name: String,
    /// Documentation.
    pub doc: Option<String>,
    /// Values, in declaration order.
    pub values: Vec<EnumValue>,
    /// Reserved ids and names.
    pub reserved: Reserved,
    /// The start tag.
    pub span: Span,
}

/// One named enum value.
#[derive(Debug)]
pub struct EnumValue {
    /// `TEXT`.
    pub name: String,
    /// Its number.
    pub number: i32,
    /// Documentation.
    pub doc: Option<String>,
    /// The start tag.
    pub span: Span,
}

/// A `<service>`.
#[derive(Debug)]
pub struct Service {
    /// Its package.
    pub package: PackageId,
    /// `MessageSvr`.
    pub name: String,
    /// `im.message.MessageSvr`.
    pub full_name: String,
    /// Service id, unique among everything compiled together.
    pub id: u16,
    /// Documentation.
    pub doc: Option<String>,
    /// Methods, in declaration order.
    pub methods: Vec<Method>,
    /// The start tag.
    pub span: Span,
}

/// A `<method>`.
#[derive(Debug)]
pub struct Method {
    /// `Send`.
    pub name: String,
    /// `send`: the Rust function name.
    pub fn_name: String,
    /// Method id, unique in its service.
    pub id: u16,
    /// Documentation.
    pub doc: Option<String>,
    /// Request struct.
    pub request: StructId,
    /// Response struct; `None` for a oneway method.
    pub response: Option<StructId>,
    /// Deadline for a call, from the method or else its service (default 500).
    pub timeout_ms: u32,
    /// Whether and how often a failed call may be tried again.
    pub retry: Retry,
    /// Business priority for overload control.
    pub priority: Priority,
    /// Whether a call may wait for an event up to its deadline (`long_poll="true"`): its
    /// latency is the wait, so it is neither logged as slow nor judged by latency alarms.
    pub long_poll: bool,
    /// Status codes this method's monitoring counts in another class than the runtime's
    /// default, by their status names (`not_found`, `application`), in IDL order.
    pub classes: Vec<(String, ErrorClass)>,
    /// The start tag.
    pub span: Span,
}

/// Where a method's IDL moves a status code for monitoring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// `faults`: the server's failure; drives the error rate and its alarms.
    Fault,
    /// `caller_errors`: the caller's doing; counted apart, never paged on.
    Caller,
}

/// The status names a method may move between classes (`ok` may not move), each with its
/// code: svrkit's codes, `application` for every code from 1000 up, `unknown` for codes the
/// runtime does not know.
pub const STATUS_NAMES: [(&str, u32); 14] = [
    ("cancelled", 1),
    ("invalid_argument", 2),
    ("deadline_exceeded", 3),
    ("not_found", 4),
    ("unavailable", 5),
    ("overloaded", 6),
    ("unimplemented", 7),
    ("internal", 8),
    ("too_large", 9),
    ("unauthenticated", 10),
    ("permission_denied", 11),
    ("resource_exhausted", 12),
    ("application", 1000),
    ("unknown", 13),
];

/// The retry rule of a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Never retried (the default): the call may have side effects.
    None,
    /// Safe to repeat; tried at most this many times in all (1..=5).
    Idempotent {
        /// Attempts including the first.
        max_attempts: u8,
    },
}

/// Business priority of a method, used by overload control to shed the least important work
/// first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

impl Priority {
    /// The IDL spelling.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Default deadline of a method when neither it nor its service sets `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u32 = 500;
/// Attempts of an idempotent method when `max_attempts` is not set.
pub const DEFAULT_MAX_ATTEMPTS: u8 = 3;

impl Schema {
    /// The struct with this id.
    pub fn struct_(&self, id: StructId) -> &Struct {
        &self.structs[id.0]
    }

    /// The enum with this id.
    pub fn enum_(&self, id: EnumId) -> &Enum {
        &self.enums[id.0]
    }

    /// The package with this id.
    pub fn package(&self, id: PackageId) -> &Package {
        &self.packages[id.0]
    }

    /// The IDL spelling of a value type, fully qualified for named types.
    pub fn type_name(&self, ty: ValueType) -> String {
        match ty {
            ValueType::Scalar(s) => s.name().to_owned(),
            ValueType::Enum(e) => self.enum_(e).full_name.clone(),
            ValueType::Struct(s) => self.struct_(s).full_name.clone(),
        }
    }
}
