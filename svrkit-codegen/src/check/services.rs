//! Services and methods: ids, request/response types and call policies.

use std::collections::HashMap;

use super::{Checker, names, values};
use crate::ast;
use crate::error;
use crate::ident;
use crate::ir::{self, ErrorClass, Method, Priority, Retry, Service, StructId, ValueType};
use crate::span::Span;

impl Checker<'_> {
    pub(super) fn services(&mut self, files: &[ast::File]) {
        let mut by_id: HashMap<i64, Span> = HashMap::new();
        for file in files {
            let package = self.file_package[&file.id];
            for item in &file.items {
                let ast::Item::Service(s) = item else {
                    continue;
                };
                let id = values::integer(&s.id, "service id", 1, 65_535, self.diags);
                if let Some(id) = id
                    && let Some(first) = by_id.insert(id, s.id.span)
                {
                    self.diags
                        .push(error::duplicate_id(&s.id, "service id", first));
                }
                let timeout = match &s.timeout_ms {
                    Some(t) => values::integer(t, "timeout_ms", 1, i64::from(u32::MAX), self.diags)
                        .map(|t| t as u32),
                    None => Some(ir::DEFAULT_TIMEOUT_MS),
                };
                let methods = self.methods(file, s, timeout.unwrap_or(ir::DEFAULT_TIMEOUT_MS));
                let full_name = self.full_name(package, &s.name.value);
                let index = self.schema.services.len();
                self.schema.services.push(Service {
                    package,
                    name: s.name.value.clone(),
                    full_name,
                    id: id.unwrap_or(0) as u16,
                    doc: values::doc(&s.doc),
                    methods,
                    span: s.span,
                });
                self.schema.packages[package.0]
                    .items
                    .push(ir::Item::Service(index));
            }
        }
    }

    fn methods(&mut self, file: &ast::File, s: &ast::Service, service_timeout: u32) -> Vec<Method> {
        let mut by_id: HashMap<i64, Span> = HashMap::new();
        let mut by_fn: HashMap<String, &ast::Text> = HashMap::new();
        let mut out = Vec::new();
        for m in &s.methods {
            let name_ok = names::check_type_name(&m.name, "method", self.diags);
            let fn_name = ident::method_fn_name(&m.name.value);
            // A method generates the client functions `m`, `m_with` and `m_weak`; all must
            // be free.
            if name_ok && fn_name == "new" {
                self.diags.push(error::method_takes_constructor(&m.name));
            } else if name_ok {
                for rust in [
                    fn_name.clone(),
                    format!("{fn_name}_with"),
                    format!("{fn_name}_weak"),
                ] {
                    match by_fn.get(&rust) {
                        Some(first) if first.value == m.name.value => {
                            self.diags
                                .push(error::duplicate_name(&m.name, "method", first.span));
                            break;
                        }
                        Some(first) => {
                            self.diags.push(error::rust_name_collision(
                                &m.name,
                                &rust,
                                &first.value,
                                first.span,
                            ));
                            break;
                        }
                        None => {
                            by_fn.insert(rust, &m.name);
                        }
                    }
                }
            }
            let id = values::integer(&m.id, "method id", 1, 65_535, self.diags);
            if let Some(id) = id
                && let Some(first) = by_id.insert(id, m.id.span)
            {
                self.diags
                    .push(error::duplicate_id(&m.id, "method id", first));
            }
            let oneway = self.flag(m.oneway.as_ref(), "oneway");
            let long_poll = self.flag(m.long_poll.as_ref(), "long_poll");
            let classes = self.classes(m);
            let request = self.message_type(file, &m.request, "request");
            let response = match (&m.response, oneway) {
                (Some(r), Some(true)) => {
                    self.diags.push(error::oneway_with_response(r));
                    None
                }
                (Some(r), _) => self.message_type(file, r, "response").map(Some),
                (None, Some(true)) => Some(None),
                (None, Some(false)) => {
                    self.diags.push(error::missing_response(m));
                    None
                }
                (None, None) => None,
            };
            let timeout_ms = match &m.timeout_ms {
                Some(t) => values::integer(t, "timeout_ms", 1, i64::from(u32::MAX), self.diags)
                    .map(|t| t as u32),
                None => Some(service_timeout),
            };
            let retry = self.retry(m);
            let priority = match m.priority.as_ref().map(|p| (p, p.value.as_str())) {
                None => Some(Priority::Normal),
                Some((_, "critical")) => Some(Priority::Critical),
                Some((_, "high")) => Some(Priority::High),
                Some((_, "normal")) => Some(Priority::Normal),
                Some((_, "low")) => Some(Priority::Low),
                Some((p, _)) => {
                    self.diags.push(error::invalid_choice(
                        p,
                        "priority",
                        &["critical", "high", "normal", "low"],
                    ));
                    None
                }
            };
            if let (
                true,
                Some(id),
                Some(request),
                Some(response),
                Some(timeout_ms),
                Some(retry),
                Some(priority),
                Some(long_poll),
                Some(classes),
            ) = (
                name_ok, id, request, response, timeout_ms, retry, priority, long_poll, classes,
            ) {
                out.push(Method {
                    name: m.name.value.clone(),
                    fn_name,
                    id: id as u16,
                    doc: values::doc(&m.doc),
                    request,
                    response,
                    timeout_ms,
                    retry,
                    priority,
                    long_poll,
                    classes,
                    span: m.span,
                });
            }
        }
        out
    }

    /// `faults` and `caller_errors`: space-separated status names, each known, each in one
    /// list once.
    fn classes(&mut self, m: &ast::Method) -> Option<Vec<(String, ErrorClass)>> {
        let mut out: Vec<(String, ErrorClass)> = Vec::new();
        let mut ok = true;
        let names: Vec<&str> = ir::STATUS_NAMES.iter().map(|(n, _)| *n).collect();
        let lists = [
            (m.faults.as_ref(), "faults", ErrorClass::Fault),
            (
                m.caller_errors.as_ref(),
                "caller_errors",
                ErrorClass::Caller,
            ),
        ];
        for (text, attribute, class) in lists {
            let Some(text) = text else { continue };
            for word in values::words(text) {
                if !names.contains(&word.value.as_str()) {
                    self.diags
                        .push(error::invalid_choice(&word, attribute, &names));
                    ok = false;
                } else if out.iter().any(|(n, _)| *n == word.value) {
                    self.diags.push(error::status_classed_twice(&word));
                    ok = false;
                } else {
                    out.push((word.value, class));
                }
            }
        }
        ok.then_some(out)
    }

    /// A `true`/`false` attribute (absent: false).
    fn flag(&mut self, value: Option<&ast::Text>, attribute: &str) -> Option<bool> {
        match value {
            None => Some(false),
            Some(t) if t.value == "true" => Some(true),
            Some(t) if t.value == "false" => Some(false),
            Some(t) => {
                self.diags
                    .push(error::invalid_choice(t, attribute, &["true", "false"]));
                None
            }
        }
    }

    fn retry(&mut self, m: &ast::Method) -> Option<Retry> {
        let idempotent = match m.retry.as_ref().map(|r| (r, r.value.as_str())) {
            None | Some((_, "none")) => false,
            Some((_, "idempotent")) => true,
            Some((r, _)) => {
                self.diags
                    .push(error::invalid_choice(r, "retry", &["none", "idempotent"]));
                return None;
            }
        };
        match (&m.max_attempts, idempotent) {
            (Some(t), true) => {
                values::integer(t, "max_attempts", 1, 5, self.diags).map(|n| Retry::Idempotent {
                    max_attempts: n as u8,
                })
            }
            (Some(t), false) => {
                self.diags.push(error::max_attempts_without_retry(t));
                None
            }
            (None, true) => Some(Retry::Idempotent {
                max_attempts: ir::DEFAULT_MAX_ATTEMPTS,
            }),
            (None, false) => Some(Retry::None),
        }
    }

    fn message_type(&mut self, file: &ast::File, name: &ast::Text, role: &str) -> Option<StructId> {
        match self.resolve(file.id, name)? {
            ValueType::Struct(id) => Some(id),
            other => {
                let what = match other {
                    ValueType::Enum(_) => "an enum",
                    _ => "a scalar",
                };
                self.diags.push(error::not_a_struct(name, role, what));
                None
            }
        }
    }
}
