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
mod enums;
mod rules;
mod services;
mod structs;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

pub use ack::Acknowledged;
use rules::Verdict;

use crate::Compiled;
use crate::ir::{EnumId, Schema, StructId};
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
    /// [`subject`](Change::subject) and [`detail`](Change::detail), the
    /// [`key`](Change::key) an acknowledgment names.
    pub kind: &'static str,
    /// The package-qualified item changed (`im.message.Message.body`, `im.seq.SeqSvr.Alloc`).
    pub subject: String,
    /// What it changed from and to, where that is short (`1->2`, `int32->string`; empty
    /// for additions and removals): part of the key, so that acknowledging one change of an
    /// item does not acknowledge the next.
    pub detail: String,
    /// What changed and what it does.
    pub message: String,
    /// Where, as `file:line:col`: in the new file, or in the old one for removals.
    pub location: String,
    /// Whether an acknowledgment file lists it (see [`Acknowledged`]).
    pub acknowledged: bool,
}

impl Change {
    /// `kind subject[ detail]`: what an acknowledgment file lists to let this change pass.
    pub fn key(&self) -> String {
        if self.detail.is_empty() {
            format!("{} {}", self.kind, self.subject)
        } else {
            format!("{} {} {}", self.kind, self.subject, self.detail)
        }
    }
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

/// A change before its location is rendered.
struct Finding {
    severity: Severity,
    kind: &'static str,
    subject: String,
    detail: String,
    message: String,
    at: At,
}

impl Finding {
    fn new(
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
            detail: String::new(),
            message,
            at,
        }
    }

    fn detail(mut self, detail: String) -> Finding {
        self.detail = detail;
        self
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

/// Comparison state: the two schemas, and verdicts on pairs of differently named types.
struct Ctx<'a> {
    o: &'a Schema,
    n: &'a Schema,
    opts: &'a Options,
    /// Verdicts on pairs of differently named structs, once final.
    structs: HashMap<(StructId, StructId), Verdict>,
    enums: HashMap<(EnumId, EnumId), Verdict>,
    /// The pairs being compared, outermost first: a pair met again inside itself counts as
    /// the same (what differs shows elsewhere in the cycle).
    in_progress: Vec<(StructId, StructId)>,
    /// The outermost position in `in_progress` that the current comparison leaned on: a
    /// verdict that leaned on a pair still being compared is not final, and is not kept.
    leaned_on: usize,
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
        in_progress: Vec::new(),
        leaned_on: usize::MAX,
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
            None => found.push(Finding::new(
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
            None => found.push(Finding::new(
                Severity::SourceBreaking,
                "enum-removed",
                oe.full_name.clone(),
                format!("enum `{}` removed (breaks code using it)", oe.full_name),
                At::Old(oe.span),
            )),
        }
    }
    let (renamed, services) = ctx.services();
    found.extend(services);

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
        if old_names.iter().any(|o| o == name) || renamed.contains(&name.as_str()) {
            continue;
        }
        let kind = match what {
            "struct" => "struct-added",
            "enum" => "enum-added",
            _ => "service-added",
        };
        found.push(Finding::new(
            Severity::Compatible,
            kind,
            name.clone(),
            format!("{what} `{name}` added"),
            At::New(span),
        ));
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
            detail: f.detail,
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

/// Inclusive id ranges of `old` that `new` no longer covers.
fn uncovered(old: &[(i64, i64)], new: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut left: Vec<(i64, i64)> = old.to_vec();
    for &(nlo, nhi) in new {
        left = left
            .into_iter()
            .flat_map(|(lo, hi)| {
                let mut parts = Vec::new();
                if lo < nlo {
                    parts.push((lo, hi.min(nlo - 1)));
                }
                if hi > nhi {
                    parts.push((lo.max(nhi + 1), hi));
                }
                if hi < nlo || lo > nhi {
                    parts = vec![(lo, hi)];
                }
                parts
            })
            .collect();
    }
    left
}

/// The reservations of `old` that `new` dropped, as wire-breaking findings on the struct or
/// enum `name` (at `span`): a later version may reuse those ids. Ids the new version uses
/// (`used`) are reported as reused instead; a range left with none free is not reported.
fn released(
    name: &str,
    (one, many): (&str, &str),
    old: &crate::ir::Reserved,
    new: &crate::ir::Reserved,
    used: &[i64],
    span: Span,
) -> Vec<Finding> {
    uncovered(&old.ids, &new.ids)
        .into_iter()
        .filter(|&(lo, hi)| {
            let taken = used.iter().filter(|&&id| (lo..=hi).contains(&id)).count();
            (hi - lo + 1) as u128 > taken as u128
        })
        .map(|(lo, hi)| {
            let (ids, what) = if lo == hi {
                (
                    format!("{lo}"),
                    format!("{one} {lo} is no longer reserved: a later version may reuse it"),
                )
            } else {
                (
                    format!("{lo}-{hi}"),
                    format!(
                        "{many} {lo}-{hi} are no longer reserved: a later version may reuse them"
                    ),
                )
            };
            Finding::new(
                Severity::WireBreaking,
                "reservation-removed",
                name.to_owned(),
                format!("`{name}`: {what}, and misread data written before the reservation"),
                At::New(span),
            )
            .detail(ids)
        })
        .collect()
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
            out.push_str(&format!("  = key: {}\n", c.key()));
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

#[cfg(test)]
mod tests {
    use super::uncovered;

    #[test]
    fn uncovered_ranges_subtract() {
        assert_eq!(uncovered(&[(1, 10)], &[(1, 10)]), vec![]);
        assert_eq!(uncovered(&[(1, 10)], &[(3, 4)]), vec![(1, 2), (5, 10)]);
        assert_eq!(uncovered(&[(1, 10)], &[(20, 30)]), vec![(1, 10)]);
        assert_eq!(uncovered(&[(5, 5)], &[(1, 4), (6, 9)]), vec![(5, 5)]);
        assert_eq!(uncovered(&[(1, 10)], &[(0, 5), (8, 20)]), vec![(6, 7)]);
    }
}
