//! Compares two versions of a schema and says what each change does to peers of the other
//! version and to code built against it.
//!
//! Every change gets one of four severities:
//!
//! - **wire-breaking**: a value the old version can hold is lost or misread between
//!   versions, or a call one version makes fails at the other (a field moved to a new id,
//!   even with the old one reserved; an incompatible type; a changed default; an enum value
//!   renumbered; a method added, which callers may use before every server hosts it).
//! - **source-breaking**: values cross unchanged but the generated Rust changes (`int32` to
//!   `int64`, `string` to `bytes`, a field becoming `optional`, a rename).
//! - **policy**: a method's deadline, retry rule or priority changed.
//! - **compatible**: additions and removals that keep their ids reserved.
//!
//! [`rules`] decides type changes. Items are matched by package-qualified name, or across a
//! package rename with [`Options::package`]; fields and enum values by id and number, and by
//! name to see a move; methods by id, and by name to see a new id.

mod ack;
mod rules;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

pub use ack::Acknowledged;
use rules::{Shape, Verdict};

use crate::Compiled;
use crate::ir::{
    DefaultValue, EnumId, Field, FieldType, Method, Retry, Schema, Service, StructId, ValueType,
};
use crate::span::Span;

/// How a change affects peers and code of the other version, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// A value is lost or misread between versions, or a call fails at one of them.
    WireBreaking,
    /// The bytes keep their meaning; code built against the old version no longer compiles
    /// or means something else.
    SourceBreaking,
    /// A method's deadline, retry rule or priority changed.
    Policy,
    /// Nothing breaks.
    Compatible,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::WireBreaking => "wire-breaking",
            Severity::SourceBreaking => "source-breaking",
            Severity::Policy => "policy",
            Severity::Compatible => "compatible",
        })
    }
}

/// One difference between the old and the new schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What it breaks.
    pub severity: Severity,
    /// What kind of change, as a stable word (`field-moved`, `method-added`): with
    /// [`subject`](Change::subject), the key an acknowledgment names.
    pub kind: &'static str,
    /// The package-qualified item changed (`im.message.Message.body`, `im.seq.SeqSvr.Alloc`).
    pub subject: String,
    /// What changed and what it does.
    pub message: String,
    /// Where, as `file:line:col`: in the new file, or in the old one for removals.
    pub location: String,
    /// Whether an acknowledgment file lists it (see [`Acknowledged`]).
    pub acknowledged: bool,
}

/// How to match the two versions.
#[derive(Clone, Debug, Default)]
pub struct Options {
    packages: Vec<(String, String)>,
}

impl Options {
    /// Compares the old version's package `old` (and the packages under it) as if it were
    /// named `new`, for a schema whose package was renamed.
    #[must_use]
    pub fn package(mut self, old: impl Into<String>, new: impl Into<String>) -> Options {
        self.packages.push((old.into(), new.into()));
        self
    }

    /// An old full name as the new version would spell it.
    fn map<'n>(&self, name: &'n str) -> Cow<'n, str> {
        for (old, new) in &self.packages {
            if name == old {
                return Cow::Owned(new.clone());
            }
            if let Some(rest) = name.strip_prefix(old.as_str())
                && rest.starts_with('.')
            {
                return Cow::Owned(format!("{new}{rest}"));
            }
        }
        Cow::Borrowed(name)
    }
}

/// Where a finding points.
#[derive(Clone, Copy)]
enum At {
    New(Span),
    Old(Span),
}

struct Finding {
    severity: Severity,
    kind: &'static str,
    subject: String,
    message: String,
    at: At,
}

fn finding(
    severity: Severity,
    kind: &'static str,
    subject: String,
    message: String,
    at: At,
) -> Finding {
    Finding {
        severity,
        kind,
        subject,
        message,
        at,
    }
}

/// The worst verdict among findings, for a struct or enum compared as a field's type: the
/// first reason of the worst kind, and how many more there are.
fn fold(findings: &[Finding]) -> Verdict {
    let worst = |s: Severity| {
        let of: Vec<&Finding> = findings.iter().filter(|f| f.severity == s).collect();
        of.first().map(|f| match of.len() {
            1 => f.message.clone(),
            n => format!("{} (and {} more)", f.message, n - 1),
        })
    };
    if let Some(why) = worst(Severity::WireBreaking) {
        Verdict::Wire(why)
    } else if let Some(why) = worst(Severity::SourceBreaking) {
        Verdict::Source(why)
    } else {
        Verdict::Same
    }
}

/// A verdict on a field typed by a renamed (or replaced) struct or enum.
fn retyped(on: &str, nn: &str, inner: Verdict) -> Verdict {
    match inner {
        Verdict::Wire(why) => Verdict::Wire(format!("`{on}` became `{nn}`, which differs: {why}")),
        _ => Verdict::Source(format!("`{on}` became `{nn}`")),
    }
}

struct Ctx<'a> {
    o: &'a Schema,
    n: &'a Schema,
    opts: &'a Options,
    /// Verdicts on pairs of differently named types, computed once (and `Same` while being
    /// computed, which ends recursion through self-referencing structs).
    structs: HashMap<(StructId, StructId), Verdict>,
    enums: HashMap<(EnumId, EnumId), Verdict>,
}

/// Lists every change from `old` to `new`, matching items by their full names.
pub fn compare(old: &Compiled, new: &Compiled) -> Vec<Change> {
    compare_with(old, new, &Options::default())
}

/// Lists every change from `old` to `new`, worst first, in the order of the old schema's
/// definitions followed by additions.
pub fn compare_with(old: &Compiled, new: &Compiled, opts: &Options) -> Vec<Change> {
    let (o, n) = (old.schema(), new.schema());
    let mut ctx = Ctx {
        o,
        n,
        opts,
        structs: HashMap::new(),
        enums: HashMap::new(),
    };
    let mut found = Vec::new();

    let new_structs: HashMap<&str, StructId> = n
        .structs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.full_name.as_str(), StructId(i)))
        .collect();
    for (i, os) in o.structs.iter().enumerate() {
        match new_structs.get(&*opts.map(&os.full_name)) {
            Some(&ns) => found.extend(ctx.diff_struct(StructId(i), ns)),
            None => found.push(finding(
                Severity::SourceBreaking,
                "struct-removed",
                os.full_name.clone(),
                format!("struct `{}` removed (breaks code using it)", os.full_name),
                At::Old(os.span),
            )),
        }
    }
    let new_enums: HashMap<&str, EnumId> = n
        .enums
        .iter()
        .enumerate()
        .map(|(i, e)| (e.full_name.as_str(), EnumId(i)))
        .collect();
    for (i, oe) in o.enums.iter().enumerate() {
        match new_enums.get(&*opts.map(&oe.full_name)) {
            Some(&ne) => found.extend(ctx.diff_enum(EnumId(i), ne)),
            None => found.push(finding(
                Severity::SourceBreaking,
                "enum-removed",
                oe.full_name.clone(),
                format!("enum `{}` removed (breaks code using it)", oe.full_name),
                At::Old(oe.span),
            )),
        }
    }
    let new_services: HashMap<&str, &Service> = n
        .services
        .iter()
        .map(|s| (s.full_name.as_str(), s))
        .collect();
    for os in &o.services {
        match new_services.get(&*opts.map(&os.full_name)) {
            Some(ns) => found.extend(ctx.services(os, ns)),
            None => found.push(finding(
                Severity::WireBreaking,
                "service-removed",
                os.full_name.clone(),
                format!(
                    "service `{}` removed: callers built from the old version get UNIMPLEMENTED",
                    os.full_name
                ),
                At::Old(os.span),
            )),
        }
    }

    let old_names: Vec<Cow<'_, str>> = o
        .structs
        .iter()
        .map(|s| opts.map(&s.full_name))
        .chain(o.enums.iter().map(|e| opts.map(&e.full_name)))
        .chain(o.services.iter().map(|s| opts.map(&s.full_name)))
        .collect();
    for (name, span, what) in n
        .structs
        .iter()
        .map(|s| (&s.full_name, s.span, "struct"))
        .chain(n.enums.iter().map(|e| (&e.full_name, e.span, "enum")))
        .chain(n.services.iter().map(|s| (&s.full_name, s.span, "service")))
    {
        if !old_names.iter().any(|o| o == name) {
            let kind = match what {
                "struct" => "struct-added",
                "enum" => "enum-added",
                _ => "service-added",
            };
            found.push(finding(
                Severity::Compatible,
                kind,
                name.clone(),
                format!("{what} `{name}` added"),
                At::New(span),
            ));
        }
    }

    let at = |c: &Compiled, span: Span| {
        let (line, col) = c.sources().line_col(span);
        format!("{}:{line}:{col}", c.sources().name(span.file))
    };
    let mut changes: Vec<Change> = found
        .into_iter()
        .map(|f| Change {
            severity: f.severity,
            kind: f.kind,
            subject: f.subject,
            message: f.message,
            location: match f.at {
                At::New(s) => at(new, s),
                At::Old(s) => at(old, s),
            },
            acknowledged: false,
        })
        .collect();
    changes.sort_by_key(|c| c.severity);
    changes
}

/// Whether two defaults mean the same value; no default and a zero one do.
fn same_default(a: Option<&DefaultValue>, b: Option<&DefaultValue>) -> bool {
    let a = a.filter(|d| !d.is_zero());
    let b = b.filter(|d| !d.is_zero());
    match (a, b) {
        (None, None) => true,
        (Some(DefaultValue::Int(x)), Some(DefaultValue::Uint(y)))
        | (Some(DefaultValue::Uint(y)), Some(DefaultValue::Int(x))) => {
            i128::from(*x) == i128::from(*y)
        }
        (Some(DefaultValue::String(s)), Some(DefaultValue::Bytes(b)))
        | (Some(DefaultValue::Bytes(b)), Some(DefaultValue::String(s))) => {
            s.as_bytes() == b.as_slice()
        }
        (
            Some(DefaultValue::Enum { number: x, .. }),
            Some(DefaultValue::Enum { number: y, .. }),
        ) => x == y,
        (a, b) => a == b,
    }
}

impl Ctx<'_> {
    fn shape<'s>(schema: &'s Schema, v: ValueType) -> Shape<'s> {
        match v {
            ValueType::Scalar(s) => Shape::Scalar(s),
            ValueType::Enum(e) => Shape::Enum(&schema.enum_(e).full_name),
            ValueType::Struct(s) => Shape::Struct(&schema.struct_(s).full_name),
        }
    }

    /// Whether values of one value type cross as another.
    fn value(&mut self, ov: ValueType, nv: ValueType) -> Verdict {
        match (ov, nv) {
            (ValueType::Scalar(a), ValueType::Scalar(b)) if a == b => Verdict::Same,
            (ValueType::Struct(a), ValueType::Struct(b)) => {
                let (on, nn) = (&self.o.struct_(a).full_name, &self.n.struct_(b).full_name);
                if *self.opts.map(on) == **nn {
                    // Compared on its own, under its name.
                    return Verdict::Same;
                }
                let inner = match self.structs.get(&(a, b)) {
                    Some(v) => v.clone(),
                    None => {
                        self.structs.insert((a, b), Verdict::Same);
                        let v = fold(&self.diff_struct(a, b));
                        self.structs.insert((a, b), v.clone());
                        v
                    }
                };
                retyped(on, nn, inner)
            }
            (ValueType::Enum(a), ValueType::Enum(b)) => {
                let (on, nn) = (&self.o.enum_(a).full_name, &self.n.enum_(b).full_name);
                if *self.opts.map(on) == **nn {
                    return Verdict::Same;
                }
                let inner = match self.enums.get(&(a, b)) {
                    Some(v) => v.clone(),
                    None => {
                        let v = fold(&self.diff_enum(a, b));
                        self.enums.insert((a, b), v.clone());
                        v
                    }
                };
                retyped(on, nn, inner)
            }
            _ => rules::values(Ctx::shape(self.o, ov), Ctx::shape(self.n, nv)),
        }
    }

    fn field_type(&mut self, of: &Field, nf: &Field) -> Verdict {
        let mut element = self.value(of.ty.value(), nf.ty.value());
        if let (FieldType::Map(ok, _), FieldType::Map(nk, _)) = (of.ty, nf.ty)
            && ok != nk
        {
            element = rules::values(Shape::Scalar(ok), Shape::Scalar(nk)).and(element);
        }
        let old_default_set = of.default.as_ref().is_some_and(|d| !d.is_zero());
        rules::labels(of.ty, nf.ty, element, old_default_set)
    }

    fn diff_struct(&mut self, os_id: StructId, ns_id: StructId) -> Vec<Finding> {
        let (os, ns) = (self.o.struct_(os_id), self.n.struct_(ns_id));
        let name = &ns.full_name;
        let subject = |f: &str| format!("{name}.{f}");
        let mut out = Vec::new();
        // A field the new version declares under an old field's name at an id the old
        // version did not use: the field moved.
        let moved_to = |of: &Field| {
            ns.fields.iter().find(|nf| {
                nf.name == of.name && nf.id != of.id && !os.fields.iter().any(|f| f.id == nf.id)
            })
        };
        for of in &os.fields {
            let Some(nf) = ns.fields.iter().find(|f| f.id == of.id) else {
                if let Some(nf) = moved_to(of) {
                    out.push(finding(
                        Severity::WireBreaking,
                        "field-moved",
                        subject(&nf.name),
                        format!(
                            "`{name}`: field `{}` moved from id {} to id {}: each version drops the other's value{}",
                            nf.name,
                            of.id,
                            nf.id,
                            if ns.reserved.has_id(i64::from(of.id)) { " (reserving the old id does not carry it over)" } else { "" }
                        ),
                        At::New(nf.span),
                    ));
                } else if ns.reserved.has_id(i64::from(of.id)) {
                    out.push(finding(
                        Severity::Compatible,
                        "field-removed",
                        subject(&of.name),
                        format!(
                            "`{name}`: field {} `{}` removed and its id reserved",
                            of.id, of.name
                        ),
                        At::New(ns.span),
                    ));
                } else {
                    out.push(finding(
                        Severity::WireBreaking,
                        "field-removed-unreserved",
                        subject(&of.name),
                        format!(
                            "`{name}`: field {} `{}` removed without reserving its id: a later version may reuse it for another value",
                            of.id, of.name
                        ),
                        At::New(ns.span),
                    ));
                }
                continue;
            };
            if of.name != nf.name {
                out.push(finding(
                    Severity::SourceBreaking,
                    "field-renamed",
                    subject(&nf.name),
                    format!(
                        "`{name}`: field {} renamed from `{}` to `{}` (breaks code using it)",
                        of.id, of.name, nf.name
                    ),
                    At::New(nf.span),
                ));
            }
            match self.field_type(of, nf) {
                Verdict::Same => {}
                Verdict::Source(why) => out.push(finding(
                    Severity::SourceBreaking,
                    "field-type-changed",
                    subject(&nf.name),
                    format!("`{name}`: field {} `{}`: {why}", nf.id, nf.name),
                    At::New(nf.span),
                )),
                Verdict::Wire(why) => out.push(finding(
                    Severity::WireBreaking,
                    "field-type-changed",
                    subject(&nf.name),
                    format!("`{name}`: field {} `{}`: {why}", nf.id, nf.name),
                    At::New(nf.span),
                )),
            }
            if !same_default(of.default.as_ref(), nf.default.as_ref()) {
                out.push(finding(
                    Severity::WireBreaking,
                    "default-changed",
                    subject(&nf.name),
                    format!(
                        "`{name}`: default of field {} `{}` changed: a value equal to one version's default is left off the wire and read as the other's",
                        nf.id, nf.name
                    ),
                    At::New(nf.span),
                ));
            }
        }
        for nf in &ns.fields {
            if os.fields.iter().any(|f| f.id == nf.id) {
                continue;
            }
            if os
                .fields
                .iter()
                .any(|of| of.name == nf.name && !ns.fields.iter().any(|f| f.id == of.id))
            {
                continue; // reported as moved
            }
            if os.reserved.has_id(i64::from(nf.id)) {
                out.push(finding(
                    Severity::WireBreaking,
                    "field-id-reused",
                    subject(&nf.name),
                    format!(
                        "`{name}`: field {} `{}` reuses an id the old version reserved: old data under it is misread",
                        nf.id, nf.name
                    ),
                    At::New(nf.span),
                ));
            } else {
                out.push(finding(
                    Severity::Compatible,
                    "field-added",
                    subject(&nf.name),
                    format!("`{name}`: field {} `{}` added", nf.id, nf.name),
                    At::New(nf.span),
                ));
            }
        }
        out
    }

    fn diff_enum(&mut self, oe_id: EnumId, ne_id: EnumId) -> Vec<Finding> {
        let (oe, ne) = (self.o.enum_(oe_id), self.n.enum_(ne_id));
        let name = &ne.full_name;
        let subject = |v: &str| format!("{name}.{v}");
        let mut out = Vec::new();
        for ov in &oe.values {
            if let Some(nv) = ne
                .values
                .iter()
                .find(|v| v.name == ov.name && v.number != ov.number)
            {
                out.push(finding(
                    Severity::WireBreaking,
                    "enum-value-renumbered",
                    subject(&nv.name),
                    format!(
                        "`{name}`: value `{}` renumbered from {} to {}: each version reads the other's as another value",
                        nv.name, ov.number, nv.number
                    ),
                    At::New(nv.span),
                ));
                continue;
            }
            match ne.values.iter().find(|v| v.number == ov.number) {
                Some(nv) if nv.name != ov.name => out.push(finding(
                    Severity::SourceBreaking,
                    "enum-value-renamed",
                    subject(&nv.name),
                    format!(
                        "`{name}`: value {} renamed from `{}` to `{}` (breaks code using it)",
                        ov.number, ov.name, nv.name
                    ),
                    At::New(nv.span),
                )),
                Some(_) => {}
                None if ne.reserved.has_id(i64::from(ov.number)) => out.push(finding(
                    Severity::Compatible,
                    "enum-value-removed",
                    subject(&ov.name),
                    format!("`{name}`: value {} `{}` removed and reserved", ov.number, ov.name),
                    At::New(ne.span),
                )),
                None => out.push(finding(
                    Severity::WireBreaking,
                    "enum-value-removed-unreserved",
                    subject(&ov.name),
                    format!(
                        "`{name}`: value {} `{}` removed without reserving it: a later version may reuse the number",
                        ov.number, ov.name
                    ),
                    At::New(ne.span),
                )),
            }
        }
        for nv in &ne.values {
            if oe
                .values
                .iter()
                .any(|v| v.number == nv.number || v.name == nv.name)
            {
                continue;
            }
            if oe.reserved.has_id(i64::from(nv.number)) {
                out.push(finding(
                    Severity::WireBreaking,
                    "enum-value-reused",
                    subject(&nv.name),
                    format!(
                        "`{name}`: value {} `{}` reuses a number the old version reserved",
                        nv.number, nv.name
                    ),
                    At::New(nv.span),
                ));
            } else {
                out.push(finding(
                    Severity::Compatible,
                    "enum-value-added",
                    subject(&nv.name),
                    format!("`{name}`: value {} `{}` added", nv.number, nv.name),
                    At::New(nv.span),
                ));
            }
        }
        out
    }

    fn services(&mut self, os: &Service, ns: &Service) -> Vec<Finding> {
        let name = &ns.full_name;
        let mut out = Vec::new();
        if os.id != ns.id {
            out.push(finding(
                Severity::WireBreaking,
                "service-id-changed",
                name.clone(),
                format!(
                    "`{name}`: service id changed from {} to {}: each version's calls are unknown to the other",
                    os.id, ns.id
                ),
                At::New(ns.span),
            ));
        }
        for om in &os.methods {
            if let Some(nm) = ns.methods.iter().find(|m| m.id == om.id) {
                if nm.name != om.name {
                    out.push(finding(
                        Severity::SourceBreaking,
                        "method-renamed",
                        format!("{name}.{}", nm.name),
                        format!(
                            "`{name}`: method {} renamed from `{}` to `{}` (breaks code using it; calls go by id)",
                            om.id, om.name, nm.name
                        ),
                        At::New(nm.span),
                    ));
                }
                out.extend(self.method(name, om, nm));
            } else if let Some(nm) = ns.methods.iter().find(|m| m.name == om.name) {
                out.push(finding(
                    Severity::WireBreaking,
                    "method-id-changed",
                    format!("{name}.{}", nm.name),
                    format!(
                        "`{name}.{}`: method id changed from {} to {}: each version's calls are unknown to the other",
                        nm.name, om.id, nm.id
                    ),
                    At::New(nm.span),
                ));
                out.extend(self.method(name, om, nm));
            } else {
                out.push(finding(
                    Severity::WireBreaking,
                    "method-removed",
                    format!("{name}.{}", om.name),
                    format!(
                        "`{name}`: method `{}` removed: callers built from the old version get UNIMPLEMENTED",
                        om.name
                    ),
                    At::New(ns.span),
                ));
            }
        }
        for nm in &ns.methods {
            if !os
                .methods
                .iter()
                .any(|m| m.id == nm.id || m.name == nm.name)
            {
                out.push(finding(
                    Severity::WireBreaking,
                    "method-added",
                    format!("{name}.{}", nm.name),
                    format!(
                        "`{name}`: method `{}` added: callers get UNIMPLEMENTED from servers that do not host it yet, so every server must be upgraded before any caller uses it",
                        nm.name
                    ),
                    At::New(nm.span),
                ));
            }
        }
        out
    }

    fn method(&mut self, service: &str, om: &Method, nm: &Method) -> Vec<Finding> {
        let m = &nm.name;
        let subject = format!("{service}.{m}");
        let mut out = Vec::new();
        let mut push = |severity, kind, message: String| {
            out.push(finding(
                severity,
                kind,
                subject.clone(),
                message,
                At::New(nm.span),
            ));
        };
        match self.value(ValueType::Struct(om.request), ValueType::Struct(nm.request)) {
            Verdict::Same => {}
            Verdict::Source(why) => {
                push(
                    Severity::SourceBreaking,
                    "request-changed",
                    format!("`{service}.{m}`: request {why}"),
                );
            }
            Verdict::Wire(why) => {
                push(
                    Severity::WireBreaking,
                    "request-changed",
                    format!("`{service}.{m}`: request {why}"),
                );
            }
        }
        match (om.response, nm.response) {
            (Some(a), Some(b)) => match self.value(ValueType::Struct(a), ValueType::Struct(b)) {
                Verdict::Same => {}
                Verdict::Source(why) => push(
                    Severity::SourceBreaking,
                    "response-changed",
                    format!("`{service}.{m}`: response {why}"),
                ),
                Verdict::Wire(why) => push(
                    Severity::WireBreaking,
                    "response-changed",
                    format!("`{service}.{m}`: response {why}"),
                ),
            },
            (None, None) => {}
            (a, _) => push(
                Severity::WireBreaking,
                "method-kind-changed",
                format!(
                    "`{service}.{m}`: {}: a caller of one version waits for an answer the other never sends, or is sent one it does not expect",
                    if a.is_some() {
                        "became oneway"
                    } else {
                        "no longer oneway"
                    }
                ),
            ),
        }
        if om.timeout_ms != nm.timeout_ms {
            push(
                Severity::Policy,
                "timeout-changed",
                format!(
                    "`{service}.{m}`: deadline changed from {} ms to {} ms",
                    om.timeout_ms, nm.timeout_ms
                ),
            );
        }
        if om.retry != nm.retry {
            let describe = |r: Retry| match r {
                Retry::None => "never retried".to_owned(),
                Retry::Idempotent { max_attempts } => {
                    format!("idempotent, {max_attempts} attempts")
                }
            };
            push(
                Severity::Policy,
                "retry-changed",
                format!(
                    "`{service}.{m}`: retry changed from {} to {}",
                    describe(om.retry),
                    describe(nm.retry)
                ),
            );
        }
        if om.priority != nm.priority {
            push(
                Severity::Policy,
                "priority-changed",
                format!(
                    "`{service}.{m}`: priority changed from {} to {}",
                    om.priority.name(),
                    nm.priority.name()
                ),
            );
        }
        out
    }
}

/// Renders changes one per line, worst first, each with its location and the key that
/// acknowledges it, then a count per severity.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        let ack = if c.acknowledged {
            " (acknowledged)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{}{ack}: {}\n  --> {}\n",
            c.severity, c.message, c.location
        ));
        if c.severity == Severity::WireBreaking && !c.acknowledged {
            out.push_str(&format!("  = key: {} {}\n", c.kind, c.subject));
        }
    }
    let count = |s: Severity| changes.iter().filter(|c| c.severity == s).count();
    let acknowledged = changes.iter().filter(|c| c.acknowledged).count();
    out.push_str(&format!(
        "{} wire-breaking{}, {} source-breaking, {} policy, {} compatible change(s)\n",
        count(Severity::WireBreaking),
        if acknowledged > 0 {
            format!(" ({acknowledged} acknowledged)")
        } else {
            String::new()
        },
        count(Severity::SourceBreaking),
        count(Severity::Policy),
        count(Severity::Compatible),
    ));
    out
}

/// Whether a release gate should stop: a wire-breaking change nobody acknowledged, or with
/// `strict`, any source-breaking one too.
pub fn fails(changes: &[Change], strict: bool) -> bool {
    changes.iter().any(|c| {
        !c.acknowledged
            && (c.severity == Severity::WireBreaking
                || (strict && c.severity == Severity::SourceBreaking))
    })
}
