//! Services and methods. A call names its service and method by id, so those are what must
//! not change; names matter to code, configuration and discovery.

use super::rules::Verdict;
use super::{At, Ctx, Finding, Severity};
use crate::ir::{Method, Retry, Service, ValueType};

impl<'a> Ctx<'a> {
    /// Every service change, and the new names of services matched by id across a rename
    /// (so that they are not also reported as added).
    pub(super) fn services(&mut self) -> (Vec<&'a str>, Vec<Finding>) {
        let (o, n) = (self.o, self.n);
        let mut renamed = Vec::new();
        let mut out = Vec::new();
        let old_has = |name: &str| {
            o.services
                .iter()
                .any(|s| *self.opts.map(&s.full_name) == *name)
        };
        for os in &o.services {
            let mapped = self.opts.map(&os.full_name).into_owned();
            if let Some(ns) = n.services.iter().find(|s| s.full_name == mapped) {
                out.extend(self.service(os, ns));
            } else if let Some(ns) = n
                .services
                .iter()
                .find(|s| s.id == os.id && !old_has(&s.full_name))
            {
                renamed.push(ns.full_name.as_str());
                out.push(Finding::new(
                    Severity::SourceBreaking,
                    "service-renamed",
                    ns.full_name.clone(),
                    format!(
                        "service `{}` renamed to `{}` (same id {}: calls still reach it, but code, configuration and discovery name it)",
                        os.full_name, ns.full_name, ns.id
                    ),
                    At::New(ns.span),
                ));
                out.extend(self.service(os, ns));
            } else {
                out.push(Finding::new(
                    Severity::WireBreaking,
                    "service-removed",
                    os.full_name.clone(),
                    format!(
                        "service `{}` removed: callers built from the old version get UNIMPLEMENTED",
                        os.full_name
                    ),
                    At::Old(os.span),
                ));
            }
        }
        (renamed, out)
    }

    fn service(&mut self, os: &Service, ns: &Service) -> Vec<Finding> {
        let name = &ns.full_name;
        let subject = |m: &str| format!("{name}.{m}");
        let mut out = Vec::new();
        if os.id != ns.id {
            out.push(
                Finding::new(
                    Severity::WireBreaking,
                    "service-id-changed",
                    name.clone(),
                    format!(
                        "`{name}`: service id changed from {} to {}: each version's calls are unknown to the other",
                        os.id, ns.id
                    ),
                    At::New(ns.span),
                )
                .detail(format!("{}->{}", os.id, ns.id)),
            );
        }
        let old_named = |m: &str| os.methods.iter().find(|x| x.name == m);
        let new_named = |m: &str| ns.methods.iter().find(|x| x.name == m);
        for om in &os.methods {
            if let Some(nm) = new_named(&om.name) {
                if nm.id != om.id {
                    let mut why = format!(
                        "`{name}.{}`: method id changed from {} to {}: callers of each version reach another method or none",
                        nm.name, om.id, nm.id
                    );
                    if let Some(was) = os.methods.iter().find(|m| m.id == nm.id) {
                        why += &format!(" (old callers of `{}` now reach it)", was.name);
                    }
                    out.push(
                        Finding::new(
                            Severity::WireBreaking,
                            "method-id-changed",
                            subject(&nm.name),
                            why,
                            At::New(nm.span),
                        )
                        .detail(format!("{}->{}", om.id, nm.id)),
                    );
                }
                out.extend(self.method(name, om, nm));
            } else if let Some(nm) = ns
                .methods
                .iter()
                .find(|m| m.id == om.id && old_named(&m.name).is_none())
            {
                out.push(Finding::new(
                    Severity::SourceBreaking,
                    "method-renamed",
                    subject(&nm.name),
                    format!(
                        "`{name}`: method {} renamed from `{}` to `{}` (breaks code using it; calls go by id)",
                        om.id, om.name, nm.name
                    ),
                    At::New(nm.span),
                ));
                out.extend(self.method(name, om, nm));
            } else {
                out.push(Finding::new(
                    Severity::WireBreaking,
                    "method-removed",
                    subject(&om.name),
                    format!(
                        "`{name}`: method `{}` removed: callers built from the old version get UNIMPLEMENTED",
                        om.name
                    ),
                    At::New(ns.span),
                ));
            }
        }
        for nm in &ns.methods {
            let matched = old_named(&nm.name).is_some()
                || os
                    .methods
                    .iter()
                    .any(|m| m.id == nm.id && new_named(&m.name).is_none());
            if !matched {
                out.push(Finding::new(
                    Severity::WireBreaking,
                    "method-added",
                    subject(&nm.name),
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
        let mut push = |severity, kind, message: String, detail: String| {
            out.push(
                Finding::new(severity, kind, subject.clone(), message, At::New(nm.span))
                    .detail(detail),
            );
        };
        let (o, n) = (self.o, self.n);
        let verdict =
            |kind: &'static str,
             what: &str,
             v: Verdict,
             (a, b): (crate::ir::StructId, crate::ir::StructId),
             push: &mut dyn FnMut(Severity, &'static str, String, String)| {
                let detail = format!("{}->{}", o.struct_(a).full_name, n.struct_(b).full_name);
                match v {
                    Verdict::Same => {}
                    Verdict::Source(why) => push(
                        Severity::SourceBreaking,
                        kind,
                        format!("`{service}.{m}`: {what} {why}"),
                        detail,
                    ),
                    Verdict::Wire(why) => push(
                        Severity::WireBreaking,
                        kind,
                        format!("`{service}.{m}`: {what} {why}"),
                        detail,
                    ),
                }
            };
        let request = self.value(ValueType::Struct(om.request), ValueType::Struct(nm.request));
        verdict(
            "request-changed",
            "request",
            request,
            (om.request, nm.request),
            &mut push,
        );
        match (om.response, nm.response) {
            (Some(a), Some(b)) => {
                let response = self.value(ValueType::Struct(a), ValueType::Struct(b));
                verdict("response-changed", "response", response, (a, b), &mut push);
            }
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
                String::new(),
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
                String::new(),
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
                String::new(),
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
                String::new(),
            );
        }
        out
    }
}
