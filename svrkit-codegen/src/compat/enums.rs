//! Enums: values are matched by name and by number, since the number is what the wire
//! carries and the name is what code and JSON use.

use super::{At, Ctx, Finding, Severity, released};
use crate::ir::EnumId;

impl Ctx<'_> {
    pub(super) fn diff_enum(&mut self, oe_id: EnumId, ne_id: EnumId) -> Vec<Finding> {
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
                out.push(
                    Finding::new(
                        Severity::WireBreaking,
                        "enum-value-renumbered",
                        subject(&nv.name),
                        format!(
                            "`{name}`: value `{}` renumbered from {} to {}: each version reads the other's as another value",
                            nv.name, ov.number, nv.number
                        ),
                        At::New(nv.span),
                    )
                    .detail(format!("{}->{}", ov.number, nv.number)),
                );
                continue;
            }
            match ne.values.iter().find(|v| v.number == ov.number) {
                // A rename only if the new name is not an old value's elsewhere (then the
                // renumbering above says what happened).
                Some(nv) if nv.name != ov.name && !oe.values.iter().any(|v| v.name == nv.name) => {
                    out.push(Finding::new(
                        Severity::SourceBreaking,
                        "enum-value-renamed",
                        subject(&nv.name),
                        format!(
                            "`{name}`: value {} renamed from `{}` to `{}` (breaks code using it)",
                            ov.number, ov.name, nv.name
                        ),
                        At::New(nv.span),
                    ));
                }
                Some(_) => {}
                None if ne.reserved.has_id(i64::from(ov.number)) => out.push(Finding::new(
                    Severity::Compatible,
                    "enum-value-removed",
                    subject(&ov.name),
                    format!("`{name}`: value {} `{}` removed and reserved", ov.number, ov.name),
                    At::New(ne.span),
                )),
                None => out.push(Finding::new(
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
                out.push(Finding::new(
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
                out.push(Finding::new(
                    Severity::Compatible,
                    "enum-value-added",
                    subject(&nv.name),
                    format!("`{name}`: value {} `{}` added", nv.number, nv.name),
                    At::New(nv.span),
                ));
            }
        }
        let used: Vec<i64> = ne.values.iter().map(|v| i64::from(v.number)).collect();
        out.extend(released(
            name,
            ("number", "numbers"),
            &oe.reserved,
            &ne.reserved,
            &used,
            ne.span,
        ));
        out
    }
}
