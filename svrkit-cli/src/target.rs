//! What `call` and `bench` share: the method to call, found in an IDL, and its request
//! built from JSON with the dynamic codec.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;
use svrkit_cli::dynamic::DynamicCodec;
use svrkit_codegen::ir::{self, StructId};
use svrkit_codegen::{Builder, Compiled};
use svrkit_runtime::ChannelOptions;
use svrkit_runtime::service::{MethodDescriptor, Priority, Retry};
use svrkit_runtime::status::{Class, Classes, Code};

use crate::Failure;

/// A method of a compiled IDL, ready to be called.
pub(crate) struct Target {
    pub(crate) compiled: Compiled,
    pub(crate) descriptor: &'static MethodDescriptor,
    pub(crate) request: StructId,
    pub(crate) response: Option<StructId>,
}

impl Target {
    /// Compiles `idl` and finds `method` (`Service.Method` or `package.Service.Method`).
    pub(crate) fn load(
        builder: &Builder,
        idl: &[PathBuf],
        method: &str,
    ) -> Result<Target, Failure> {
        let compiled = builder.check(idl)?;
        let codec = DynamicCodec::new(compiled.schema());
        let (service, m) = codec.method(method).map_err(Failure::Message)?;
        // The runtime takes descriptors as `'static` (generated code has them in statics);
        // a tool makes one per run.
        let descriptor: &'static MethodDescriptor = Box::leak(Box::new(MethodDescriptor {
            name: leak(&m.name),
            full_name: leak(&format!("{}.{}", service.full_name, m.name)),
            id: m.id,
            service_id: service.id,
            timeout_ms: m.timeout_ms,
            retry: match m.retry {
                ir::Retry::None => Retry::None,
                ir::Retry::Idempotent { max_attempts } => Retry::Idempotent { max_attempts },
            },
            priority: match m.priority {
                ir::Priority::Critical => Priority::Critical,
                ir::Priority::High => Priority::High,
                ir::Priority::Normal => Priority::Normal,
                ir::Priority::Low => Priority::Low,
            },
            oneway: m.response.is_none(),
            long_poll: m.long_poll,
            classes: m.classes.iter().fold(Classes::DEFAULT, |c, (name, class)| {
                let code = ir::STATUS_NAMES
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, code)| *code);
                let class = match class {
                    ir::ErrorClass::Fault => Class::Fault,
                    ir::ErrorClass::Caller => Class::Caller,
                };
                c.with(Code(code), class)
            }),
        }));
        Ok(Target {
            descriptor,
            request: m.request,
            response: m.response,
            compiled,
        })
    }

    pub(crate) fn codec(&self) -> DynamicCodec<'_> {
        DynamicCodec::new(self.compiled.schema())
    }

    /// The request's bytes, from `--json` or else standard input (`{}` when that is a
    /// terminal).
    pub(crate) fn request_bytes(&self, json: Option<&str>) -> Result<Vec<u8>, Failure> {
        let (text, source) = match json {
            Some(text) => (text.to_owned(), "--json"),
            None if std::io::stdin().is_terminal() => ("{}".to_owned(), "--json"),
            None => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::Message(format!("cannot read standard input: {e}")))?;
                (text, "standard input")
            }
        };
        let text = if text.trim().is_empty() { "{}" } else { &text };
        let value: Json = serde_json::from_str(text)
            .map_err(|e| Failure::Message(format!("invalid JSON in {source}: {e}")))?;
        let name = &self.compiled.schema().struct_(self.request).full_name;
        self.codec()
            .encode(self.request, &value)
            .map_err(|e| Failure::Message(format!("the request is not a {name}: {e}")))
    }

    /// The default deadline of a call, unless `--timeout` says otherwise.
    pub(crate) fn timeout(&self, timeout: Option<Duration>) -> Duration {
        timeout.unwrap_or(Duration::from_millis(u64::from(self.descriptor.timeout_ms)))
    }
}

/// Options for a tool's channel: calling as `caller`, not counted in this process's metrics.
pub(crate) fn channel_options(caller: &str, connections: usize) -> ChannelOptions {
    ChannelOptions {
        caller: caller.to_owned().into(),
        monitoring: false,
        connections_per_endpoint: connections,
        ..ChannelOptions::default()
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// Reads `10s`, `500ms`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (like 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("`{s}`: the unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))
}
