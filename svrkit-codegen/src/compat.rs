//! Compares two versions of a schema and lists what changed, and which changes break old
//! peers or code built against the old version.
//!
//! Wire compatibility is about ids: a reader must never misread a value, so an id may not
//! change type or label, and a removed id must be `<reserved>` so nobody reuses it. API
//! compatibility is about the generated Rust: renaming a field or enum value breaks callers
//! even though the bytes are the same, so it is reported as breaking too.

use std::collections::HashMap;

use crate::Compiled;
use crate::ir::{Enum, FieldType, Method, Schema, Service, Struct};
use crate::span::Span;

/// One difference between the old and the new schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Whether old peers or old code would break.
    pub breaking: bool,
    /// What changed, naming the struct, enum, service or method.
    pub message: String,
    /// Where, as `file:line:col`: in the new file, or in the old one for removals.
    pub location: String,
}

struct Ctx<'a> {
    old: &'a Compiled,
    new: &'a Compiled,
    out: Vec<Change>,
}

impl Ctx<'_> {
    fn at(c: &Compiled, span: Span) -> String {
        let (line, col) = c.sources().line_col(span);
        format!("{}:{line}:{col}", c.sources().name(span.file))
    }

    fn breaking(&mut self, new_span: Option<Span>, old_span: Span, message: String) {
        let location = match new_span {
            Some(s) => Ctx::at(self.new, s),
            None => Ctx::at(self.old, old_span),
        };
        self.out.push(Change {
            breaking: true,
            message,
            location,
        });
    }

    fn compatible(&mut self, span: Span, message: String) {
        let location = Ctx::at(self.new, span);
        self.out.push(Change {
            breaking: false,
            message,
            location,
        });
    }
}

/// Lists every change from `old` to `new`, breaking ones and compatible ones, in the order of
/// the old schema's definitions followed by additions.
pub fn compare(old: &Compiled, new: &Compiled) -> Vec<Change> {
    let mut ctx = Ctx {
        old,
        new,
        out: Vec::new(),
    };
    let (o, n) = (old.schema(), new.schema());

    let new_structs: HashMap<&str, &Struct> = n
        .structs
        .iter()
        .map(|s| (s.full_name.as_str(), s))
        .collect();
    for os in &o.structs {
        match new_structs.get(os.full_name.as_str()) {
            Some(ns) => structs(&mut ctx, o, n, os, ns),
            None => ctx.breaking(None, os.span, format!("struct `{}` removed", os.full_name)),
        }
    }
    let new_enums: HashMap<&str, &Enum> =
        n.enums.iter().map(|e| (e.full_name.as_str(), e)).collect();
    for oe in &o.enums {
        match new_enums.get(oe.full_name.as_str()) {
            Some(ne) => enums(&mut ctx, oe, ne),
            None => ctx.breaking(None, oe.span, format!("enum `{}` removed", oe.full_name)),
        }
    }
    let new_services: HashMap<&str, &Service> = n
        .services
        .iter()
        .map(|s| (s.full_name.as_str(), s))
        .collect();
    for os in &o.services {
        match new_services.get(os.full_name.as_str()) {
            Some(ns) => services(&mut ctx, o, n, os, ns),
            None => ctx.breaking(None, os.span, format!("service `{}` removed", os.full_name)),
        }
    }

    let old_names: Vec<&str> = o
        .structs
        .iter()
        .map(|s| s.full_name.as_str())
        .chain(o.enums.iter().map(|e| e.full_name.as_str()))
        .chain(o.services.iter().map(|s| s.full_name.as_str()))
        .collect();
    for (name, span, what) in n
        .structs
        .iter()
        .map(|s| (&s.full_name, s.span, "struct"))
        .chain(n.enums.iter().map(|e| (&e.full_name, e.span, "enum")))
        .chain(n.services.iter().map(|s| (&s.full_name, s.span, "service")))
    {
        if !old_names.contains(&name.as_str()) {
            ctx.compatible(span, format!("{what} `{name}` added"));
        }
    }
    ctx.out
}

fn shape(schema: &Schema, ty: FieldType) -> String {
    match ty {
        FieldType::Singular(v) => schema.type_name(v),
        FieldType::Optional(v) => format!("optional {}", schema.type_name(v)),
        FieldType::Repeated(v) => format!("repeated {}", schema.type_name(v)),
        FieldType::Map(k, v) => format!("map<{}, {}>", k.name(), schema.type_name(v)),
    }
}

fn structs(ctx: &mut Ctx<'_>, o: &Schema, n: &Schema, os: &Struct, ns: &Struct) {
    let name = &os.full_name;
    for of in &os.fields {
        let Some(nf) = ns.fields.iter().find(|f| f.id == of.id) else {
            if ns.reserved.has_id(i64::from(of.id)) {
                ctx.compatible(
                    ns.span,
                    format!(
                        "`{name}`: field {} `{}` removed and its id reserved",
                        of.id, of.name
                    ),
                );
            } else {
                ctx.breaking(
                    Some(ns.span),
                    of.span,
                    format!(
                        "`{name}`: field {} `{}` removed without reserving its id",
                        of.id, of.name
                    ),
                );
            }
            continue;
        };
        let (old_shape, new_shape) = (shape(o, of.ty), shape(n, nf.ty));
        if old_shape != new_shape {
            ctx.breaking(
                Some(nf.span),
                of.span,
                format!("`{name}`: field {} reused with another type or label: `{old_shape}` became `{new_shape}`", of.id),
            );
        }
        if of.name != nf.name {
            ctx.breaking(
                Some(nf.span),
                of.span,
                format!(
                    "`{name}`: field {} renamed from `{}` to `{}` (breaks code using it)",
                    of.id, of.name, nf.name
                ),
            );
        }
        if of.default != nf.default {
            ctx.breaking(
                Some(nf.span),
                of.span,
                format!("`{name}`: default of field {} `{}` changed (an absent value now means something else)", of.id, nf.name),
            );
        }
    }
    for nf in &ns.fields {
        if os.fields.iter().any(|f| f.id == nf.id) {
            continue;
        }
        if os.reserved.has_id(i64::from(nf.id)) {
            ctx.breaking(
                Some(nf.span),
                nf.span,
                format!(
                    "`{name}`: field {} `{}` reuses an id the old schema reserved",
                    nf.id, nf.name
                ),
            );
        } else {
            ctx.compatible(
                nf.span,
                format!("`{name}`: field {} `{}` added", nf.id, nf.name),
            );
        }
    }
}

fn enums(ctx: &mut Ctx<'_>, oe: &Enum, ne: &Enum) {
    let name = &oe.full_name;
    for ov in &oe.values {
        match ne.values.iter().find(|v| v.number == ov.number) {
            None if ne.reserved.has_id(i64::from(ov.number)) => {
                ctx.compatible(
                    ne.span,
                    format!(
                        "`{name}`: value {} `{}` removed and reserved",
                        ov.number, ov.name
                    ),
                );
            }
            None => ctx.breaking(
                Some(ne.span),
                ov.span,
                format!(
                    "`{name}`: value {} `{}` removed without reserving it",
                    ov.number, ov.name
                ),
            ),
            Some(nv) if nv.name != ov.name => ctx.breaking(
                Some(nv.span),
                ov.span,
                format!(
                    "`{name}`: value {} renamed from `{}` to `{}` (breaks code using it)",
                    ov.number, ov.name, nv.name
                ),
            ),
            Some(_) => {}
        }
    }
    for nv in &ne.values {
        if !oe.values.iter().any(|v| v.number == nv.number) {
            ctx.compatible(
                nv.span,
                format!("`{name}`: value {} `{}` added", nv.number, nv.name),
            );
        }
    }
}

fn services(ctx: &mut Ctx<'_>, o: &Schema, n: &Schema, os: &Service, ns: &Service) {
    let name = &os.full_name;
    if os.id != ns.id {
        ctx.breaking(
            Some(ns.span),
            os.span,
            format!("`{name}`: service id changed from {} to {}", os.id, ns.id),
        );
    }
    for om in &os.methods {
        let Some(nm) = ns.methods.iter().find(|m| m.name == om.name) else {
            ctx.breaking(
                Some(ns.span),
                om.span,
                format!("`{name}`: method `{}` removed", om.name),
            );
            continue;
        };
        method(ctx, o, n, name, om, nm);
    }
    for nm in &ns.methods {
        if !os.methods.iter().any(|m| m.name == nm.name) {
            ctx.compatible(nm.span, format!("`{name}`: method `{}` added", nm.name));
        }
    }
}

fn method(ctx: &mut Ctx<'_>, o: &Schema, n: &Schema, service: &str, om: &Method, nm: &Method) {
    let m = &om.name;
    if om.id != nm.id {
        ctx.breaking(
            Some(nm.span),
            om.span,
            format!(
                "`{service}.{m}`: method id changed from {} to {}",
                om.id, nm.id
            ),
        );
    }
    let (oreq, nreq) = (
        &o.struct_(om.request).full_name,
        &n.struct_(nm.request).full_name,
    );
    if oreq != nreq {
        ctx.breaking(
            Some(nm.span),
            om.span,
            format!("`{service}.{m}`: request changed from `{oreq}` to `{nreq}`"),
        );
    }
    let describe = |s: &Schema, r: Option<crate::ir::StructId>| match r {
        Some(r) => format!("`{}`", s.struct_(r).full_name),
        None => "none (oneway)".to_owned(),
    };
    let (oresp, nresp) = (describe(o, om.response), describe(n, nm.response));
    if oresp != nresp {
        ctx.breaking(
            Some(nm.span),
            om.span,
            format!("`{service}.{m}`: response changed from {oresp} to {nresp}"),
        );
    }
}

/// Renders changes one per line with their location, breaking ones first, and a summary.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes
        .iter()
        .filter(|c| c.breaking)
        .chain(changes.iter().filter(|c| !c.breaking))
    {
        let tag = if c.breaking { "breaking" } else { "compatible" };
        out.push_str(&format!("{tag}: {}\n  --> {}\n", c.message, c.location));
    }
    let breaking = changes.iter().filter(|c| c.breaking).count();
    out.push_str(&format!(
        "{breaking} breaking, {} compatible change(s)\n",
        changes.len() - breaking
    ));
    out
}
