//! Structs and the types of their fields.
//!
//! Fields are matched by id, since the id is what the wire carries, and by name to see a
//! field that moved: a name found at another id is a move (wire-breaking, whatever became of
//! the old id), and two ids whose names differ are a rename only when neither name is found
//! elsewhere.

use super::rules::{self, Shape, Verdict};
use super::{At, Ctx, Finding, Severity, fold, released};
use crate::ir::{DefaultValue, Field, FieldType, Schema, StructId, ValueType};

impl Ctx<'_> {
    fn shape<'s>(schema: &'s Schema, v: ValueType) -> Shape<'s> {
        match v {
            ValueType::Scalar(s) => Shape::Scalar(s),
            ValueType::Enum(e) => Shape::Enum(&schema.enum_(e).full_name),
            ValueType::Struct(s) => Shape::Struct(&schema.struct_(s).full_name),
        }
    }

    /// Whether values of one value type cross as another.
    pub(super) fn value(&mut self, ov: ValueType, nv: ValueType) -> Verdict {
        match (ov, nv) {
            (ValueType::Scalar(a), ValueType::Scalar(b)) if a == b => Verdict::Same,
            (ValueType::Struct(a), ValueType::Struct(b)) => {
                let (on, nn) = (&self.o.struct_(a).full_name, &self.n.struct_(b).full_name);
                if *self.opts.map(on) == **nn {
                    // Compared on its own, under its name.
                    return Verdict::Same;
                }
                let inner = self.struct_pair(a, b);
                retyped("struct", on, nn, inner)
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
                retyped("enum", on, nn, inner)
            }
            _ => rules::values(Ctx::shape(self.o, ov), Ctx::shape(self.n, nv)),
        }
    }

    /// The verdict on reading struct `a` of the old schema as `b` of the new, kept once final.
    ///
    /// Structs can contain themselves through others. A pair met again while it is being
    /// compared counts as the same, which is right for that pair (whatever differs shows up
    /// in its fields), but not for a pair compared inside it that leaned on it: such a
    /// verdict is computed again when asked again, after the outer pair is final.
    fn struct_pair(&mut self, a: crate::ir::StructId, b: crate::ir::StructId) -> Verdict {
        if let Some(v) = self.structs.get(&(a, b)) {
            return v.clone();
        }
        if let Some(at) = self.in_progress.iter().position(|&p| p == (a, b)) {
            self.leaned_on = self.leaned_on.min(at);
            return Verdict::Same;
        }
        let position = self.in_progress.len();
        self.in_progress.push((a, b));
        let outer = std::mem::replace(&mut self.leaned_on, usize::MAX);
        let verdict = fold(&self.diff_struct(a, b));
        let leaned = self.leaned_on;
        self.leaned_on = outer.min(leaned);
        self.in_progress.pop();
        if leaned >= position {
            self.structs.insert((a, b), verdict.clone());
        }
        verdict
    }

    fn field_type(&mut self, of: &Field, nf: &Field) -> Verdict {
        if let Some(v) = self.map_as_entries(of.ty, nf.ty) {
            return v;
        }
        let mut element = self.value(of.ty.value(), nf.ty.value());
        if let (FieldType::Map(ok, _), FieldType::Map(nk, _)) = (of.ty, nf.ty)
            && ok != nk
        {
            element = rules::values(Shape::Scalar(ok), Shape::Scalar(nk)).and(element);
        }
        let old_default_set = of.default.as_ref().is_some_and(|d| !d.is_zero());
        rules::labels(of.ty, nf.ty, element, old_default_set)
    }

    /// A map and a list of entry structs (key at id 1, value at id 2) are the same bytes:
    /// the verdict on one becoming the other, if that is the change.
    fn map_as_entries(&mut self, old: FieldType, new: FieldType) -> Option<Verdict> {
        let entry = |schema: &Schema, s: StructId| -> Option<(ValueType, ValueType)> {
            let fields = &schema.struct_(s).fields;
            let at = |id: u32| {
                fields.iter().find(|f| f.id == id).and_then(|f| match f.ty {
                    FieldType::Singular(v) => Some(v),
                    _ => None,
                })
            };
            (fields.len() == 2).then_some(())?;
            Some((at(1)?, at(2)?))
        };
        let verdict = match (old, new) {
            (FieldType::Map(k, v), FieldType::Repeated(ValueType::Struct(s))) => {
                let (ek, ev) = entry(self.n, s)?;
                self.value(ValueType::Scalar(k), ek).and(self.value(v, ev))
            }
            (FieldType::Repeated(ValueType::Struct(s)), FieldType::Map(k, v)) => {
                let (ek, ev) = entry(self.o, s)?;
                self.value(ek, ValueType::Scalar(k)).and(self.value(ev, v))
            }
            _ => return None,
        };
        Some(match verdict {
            Verdict::Wire(why) => Verdict::Wire(format!(
                "a map became a list of entries, or back, whose keys or values differ: {why}"
            )),
            _ => Verdict::Source(
                "a map became a list of entry structs, or back (the same bytes)".to_owned(),
            ),
        })
    }

    pub(super) fn diff_struct(&mut self, os_id: StructId, ns_id: StructId) -> Vec<Finding> {
        let (o, n) = (self.o, self.n);
        let (os, ns) = (o.struct_(os_id), n.struct_(ns_id));
        let name = &ns.full_name;
        let subject = |f: &str| format!("{name}.{f}");
        let old_named = |n: &str| os.fields.iter().find(|f| f.name == n);
        let new_named = |n: &str| ns.fields.iter().find(|f| f.name == n);
        let mut out = Vec::new();
        for of in &os.fields {
            let at_id = ns.fields.iter().find(|f| f.id == of.id);
            let moved = new_named(&of.name).filter(|nf| nf.id != of.id);
            if let Some(nf) = moved {
                let mut why = format!(
                    "`{name}`: field `{}` moved from id {} to id {}: each version drops the other's value",
                    nf.name, of.id, nf.id
                );
                if let Some(was) = os.fields.iter().find(|f| f.id == nf.id) {
                    why += &format!(
                        ", and old data under id {} (`{}`) is read as `{}`",
                        nf.id, was.name, nf.name
                    );
                }
                if let Some(now) = at_id {
                    why += &format!(
                        ", and old data under id {} is read as `{}`",
                        of.id, now.name
                    );
                } else if ns.reserved.has_id(i64::from(of.id)) {
                    why += " (reserving the old id does not carry the value over)";
                }
                out.push(
                    Finding::new(
                        Severity::WireBreaking,
                        "field-moved",
                        subject(&nf.name),
                        why,
                        At::New(nf.span),
                    )
                    .detail(format!("{}->{}", of.id, nf.id)),
                );
            }
            match at_id {
                Some(nf) => {
                    let renamed = nf.name != of.name
                        && old_named(&nf.name).is_none()
                        && new_named(&of.name).is_none();
                    if renamed {
                        out.push(Finding::new(
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
                    if nf.name == of.name || renamed {
                        out.extend(self.same_field(name, of, nf));
                    }
                    // Otherwise another field took the id: the moves say so.
                }
                None if moved.is_some() => {}
                None if ns.reserved.has_id(i64::from(of.id)) => out.push(Finding::new(
                    Severity::Compatible,
                    "field-removed",
                    subject(&of.name),
                    format!("`{name}`: field {} `{}` removed and its id reserved", of.id, of.name),
                    At::New(ns.span),
                )),
                None => out.push(Finding::new(
                    Severity::WireBreaking,
                    "field-removed-unreserved",
                    subject(&of.name),
                    format!(
                        "`{name}`: field {} `{}` removed without reserving its id: a later version may reuse it for another value",
                        of.id, of.name
                    ),
                    At::New(ns.span),
                )),
            }
        }
        for nf in &ns.fields {
            if os.fields.iter().any(|f| f.id == nf.id) || old_named(&nf.name).is_some() {
                continue; // the same field, a rename, or a move: above
            }
            if os.reserved.has_id(i64::from(nf.id)) {
                out.push(Finding::new(
                    Severity::WireBreaking,
                    "field-id-reused",
                    subject(&nf.name),
                    format!(
                        "`{name}`: field {} `{}` reuses an id the old version reserved: data written before the reservation is misread",
                        nf.id, nf.name
                    ),
                    At::New(nf.span),
                ));
            } else {
                out.push(Finding::new(
                    Severity::Compatible,
                    "field-added",
                    subject(&nf.name),
                    format!("`{name}`: field {} `{}` added", nf.id, nf.name),
                    At::New(nf.span),
                ));
            }
        }
        // Ids a new field now uses are reported as reused.
        let used: Vec<i64> = ns.fields.iter().map(|f| i64::from(f.id)).collect();
        out.extend(released(
            name,
            ("id", "ids"),
            &os.reserved,
            &ns.reserved,
            &used,
            ns.span,
        ));
        out
    }

    /// A field of the same id in both versions (renamed or not): its type and default.
    fn same_field(&mut self, name: &str, of: &Field, nf: &Field) -> Vec<Finding> {
        let subject = format!("{name}.{}", nf.name);
        let mut out = Vec::new();
        let change = format!("{}->{}", shape(self.o, of.ty), shape(self.n, nf.ty));
        match self.field_type(of, nf) {
            Verdict::Same => {}
            Verdict::Source(why) => out.push(
                Finding::new(
                    Severity::SourceBreaking,
                    "field-type-changed",
                    subject.clone(),
                    format!("`{name}`: field {} `{}`: {why}", nf.id, nf.name),
                    At::New(nf.span),
                )
                .detail(change),
            ),
            Verdict::Wire(why) => out.push(
                Finding::new(
                    Severity::WireBreaking,
                    "field-type-changed",
                    subject.clone(),
                    format!("`{name}`: field {} `{}`: {why}", nf.id, nf.name),
                    At::New(nf.span),
                )
                .detail(change),
            ),
        }
        let (od, nd) = (
            default_value(of.default.as_ref()),
            default_value(nf.default.as_ref()),
        );
        if od != nd {
            out.push(
                Finding::new(
                    Severity::WireBreaking,
                    "default-changed",
                    subject,
                    format!(
                        "`{name}`: default of field {} `{}` changed: a value equal to one version's default is left off the wire and read as the other's",
                        nf.id, nf.name
                    ),
                    At::New(nf.span),
                )
                .detail(format!("{}->{}", od.describe(), nd.describe())),
            );
        }
        out
    }
}

/// A field's shape as the IDL spells it.
fn shape(schema: &Schema, ty: FieldType) -> String {
    match ty {
        FieldType::Singular(v) => schema.type_name(v),
        FieldType::Optional(v) => format!("optional:{}", schema.type_name(v)),
        FieldType::Repeated(v) => format!("repeated:{}", schema.type_name(v)),
        FieldType::Map(k, v) => format!("map:{}:{}", k.name(), schema.type_name(v)),
    }
}

/// A verdict on a field typed by a renamed (or replaced) struct or enum.
fn retyped(what: &str, on: &str, nn: &str, inner: Verdict) -> Verdict {
    match inner {
        Verdict::Wire(why) => {
            Verdict::Wire(format!("{what} `{on}` became `{nn}`, which differs: {why}"))
        }
        _ => Verdict::Source(format!("{what} `{on}` became `{nn}`")),
    }
}

/// A default as the value it stands for, whatever the field's type: no default and a zero
/// one are the same, an enum value is its number, a string its bytes.
#[derive(Debug, PartialEq)]
enum Meaning {
    Zero,
    Int(i128),
    Float(u64),
    Bytes(Vec<u8>),
}

impl Meaning {
    fn describe(&self) -> String {
        match self {
            Meaning::Zero => "0".to_owned(),
            Meaning::Int(i) => i.to_string(),
            Meaning::Float(bits) => f64::from_bits(*bits).to_string(),
            Meaning::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
        }
    }
}

fn default_value(d: Option<&DefaultValue>) -> Meaning {
    match d.filter(|d| !d.is_zero()) {
        None => Meaning::Zero,
        Some(DefaultValue::Bool(b)) => Meaning::Int(i128::from(*b)),
        Some(DefaultValue::Int(i)) => Meaning::Int(i128::from(*i)),
        Some(DefaultValue::Uint(u)) => Meaning::Int(i128::from(*u)),
        Some(DefaultValue::Enum { number, .. }) => Meaning::Int(i128::from(*number)),
        Some(DefaultValue::Float(f)) => Meaning::Float(f.to_bits()),
        Some(DefaultValue::String(s)) => Meaning::Bytes(s.as_bytes().to_vec()),
        Some(DefaultValue::Bytes(b)) => Meaning::Bytes(b.clone()),
    }
}
