//! gRPC server reflection (`grpc.reflection.v1` and its older twin `v1alpha`, which many
//! clients still ask first): lets `grpcurl`, Postman or a Python client list the hosted
//! services and fetch their schemas, then call them with no `.proto` at hand.
//!
//! The schemas are the descriptors each generated service embeds ([`Service::proto`]: its
//! package's `.proto` as `svrkit proto` exports it, with everything it imports), indexed
//! once when the server is built, with the standard health service's
//! (`health::descriptor_set`), so that `grpcurl ... grpc.health.v1.Health/Check` works too.
//! The stream answers each request as it arrives. The reflection service itself is not
//! listed: a reflection client has its schema already.
//!
//! [`Service::proto`]: crate::service::Service::proto

use std::collections::HashMap;

use crate::codec::{DecodeError, Decoder, wire};

/// The paths of the two versions' one method.
pub(super) const PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The largest request the stream takes (a request names one file or symbol).
pub(super) const MAX_REQUEST: usize = 64 * 1024;

/// Every file the hosted services' schemas need, and where each symbol is defined.
#[derive(Default)]
pub(crate) struct Reflection {
    /// Encoded `FileDescriptorProto`s, by file name.
    files: HashMap<String, File>,
    /// The file that defines each fully qualified symbol (package, message, enum, service,
    /// method).
    symbols: HashMap<String, String>,
    /// The hosted services' full names, sorted.
    services: Vec<String>,
    /// The messages' full names: what extension numbers may be asked of.
    messages: std::collections::HashSet<String>,
}

struct File {
    bytes: Vec<u8>,
    dependencies: Vec<String>,
}

/// What a `ServerReflectionRequest` asks.
enum Ask {
    File(String),
    Symbol(String),
    ListServices,
    /// The file with an extension: proto3 has none.
    Extension,
    /// A message's extension numbers: none, in proto3.
    ExtensionNumbers(String),
    Nothing,
}

impl Reflection {
    /// Indexes the descriptor sets of the hosted services (`services`: their full names).
    /// A set that does not decode is left out (it would only come from a hand-written
    /// `Service::proto`).
    pub(crate) fn new<'a>(
        sets: impl Iterator<Item = &'a [u8]>,
        services: Vec<String>,
    ) -> Reflection {
        let mut reflection = Reflection {
            services,
            ..Reflection::default()
        };
        reflection.services.sort();
        reflection.services.dedup();
        for set in sets {
            let _ = reflection.index_set(set);
        }
        reflection
    }

    fn index_set(&mut self, set: &[u8]) -> Result<(), DecodeError> {
        let mut decoder = Decoder::new(set);
        while !decoder.is_empty() {
            let key = decoder.read_key()?;
            if key != wire::key(1, wire::WireType::LengthDelimited) {
                decoder.skip_value(key)?;
                continue;
            }
            let bytes = decoder.read_slice()?;
            self.index_file(bytes)?;
        }
        Ok(())
    }

    /// Indexes one `FileDescriptorProto`: its name (1), package (2), dependencies (3),
    /// messages (4, with their fields and nested messages and enums), enums (5, with their
    /// values) and services (6, with methods): every name protobuf gives a full name to.
    fn index_file(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut name = String::new();
        let mut package = String::new();
        let mut dependencies = Vec::new();
        let mut symbols = Vec::new();
        let mut decoder = Decoder::new(bytes);
        while !decoder.is_empty() {
            let key = decoder.read_key()?;
            match key >> 3 {
                1 => name = decoder.read_string()?.to_string(),
                2 => package = decoder.read_string()?.to_string(),
                3 => dependencies.push(decoder.read_string()?.to_string()),
                4 => decoder.nested(|d| named(d, Kind::Message, "", &mut symbols))?,
                5 => decoder.nested(|d| named(d, Kind::Enum, "", &mut symbols))?,
                6 => decoder.nested(|d| named(d, Kind::Service, "", &mut symbols))?,
                _ => decoder.skip_value(key)?,
            }
        }
        if self.files.contains_key(&name) {
            return Ok(());
        }
        let prefix = if package.is_empty() {
            String::new()
        } else {
            format!("{package}.")
        };
        if !package.is_empty() {
            self.symbols.entry(package).or_insert_with(|| name.clone());
        }
        for (symbol, message) in symbols {
            let full = format!("{prefix}{symbol}");
            if message {
                self.messages.insert(full.clone());
            }
            self.symbols.insert(full, name.clone());
        }
        self.files.insert(
            name,
            File {
                bytes: bytes.to_vec(),
                dependencies,
            },
        );
        Ok(())
    }

    /// The encoded `ServerReflectionResponse` to an encoded `ServerReflectionRequest`.
    pub(super) fn answer(&self, request: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let ask = match read_request(request) {
            Ok(ask) => ask,
            Err(e) => {
                error(&mut out, 3, &format!("a request that does not decode: {e}"));
                return out;
            }
        };
        // original_request (2), echoed.
        put_len(&mut out, 2, request);
        match ask {
            Ask::ListServices => {
                let mut list = Vec::new();
                for service in &self.services {
                    let mut one = Vec::new();
                    put_len(&mut one, 1, service.as_bytes());
                    put_len(&mut list, 1, &one);
                }
                put_len(&mut out, 6, &list);
            }
            Ask::File(name) => match self.files.get(&name) {
                Some(_) => self.files_response(&mut out, &name),
                None => error(&mut out, 5, &format!("no file {name} here")),
            },
            Ask::Symbol(symbol) => match self.symbols.get(&symbol) {
                Some(name) => self.files_response(&mut out, name),
                None => error(&mut out, 5, &format!("no symbol {symbol} here")),
            },
            Ask::Extension => error(&mut out, 5, "proto3 schemas have no extensions"),
            // An `ExtensionNumberResponse` (5) with none, for a message that is here (as
            // grpc-go answers; Python's reflection client asks it of every message).
            Ask::ExtensionNumbers(message) => match self.messages.get(&message) {
                Some(_) => {
                    let mut numbers = Vec::new();
                    put_len(&mut numbers, 1, message.as_bytes());
                    put_len(&mut out, 5, &numbers);
                }
                None => error(&mut out, 5, &format!("no message {message} here")),
            },
            Ask::Nothing => error(&mut out, 3, "the request asks nothing"),
        }
        out
    }

    /// A `FileDescriptorResponse` (4) with `name` and every file it imports, itself first.
    fn files_response(&self, out: &mut Vec<u8>, name: &str) {
        let mut names = vec![name.to_owned()];
        let mut at = 0;
        while at < names.len() {
            if let Some(file) = self.files.get(&names[at]) {
                for dependency in &file.dependencies {
                    if !names.contains(dependency) {
                        names.push(dependency.clone());
                    }
                }
            }
            at += 1;
        }
        let mut files = Vec::new();
        for name in &names {
            if let Some(file) = self.files.get(name) {
                put_len(&mut files, 1, &file.bytes);
            }
        }
        put_len(out, 4, &files);
    }
}

/// What a descriptor describes, for the names in it.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Message,
    Enum,
    Service,
}

/// The full names in a message, enum or service descriptor under `outer` (`package` or
/// `package.Outer`): its own (field 1), and those of its fields, nested messages and enums
/// (a message's 2, 3 and 4), oneofs (a message's 8), values (an enum's 2) or methods (a
/// service's 2), each with whether it is a message. An enum's
/// values are named in the enum's scope, not under it (`pkg.Msg.SERVING` for
/// `pkg.Msg.Status.SERVING`), as protobuf scopes them.
fn named(
    decoder: &mut Decoder<'_>,
    kind: Kind,
    outer: &str,
    symbols: &mut Vec<(String, bool)>,
) -> Result<(), DecodeError> {
    let mut name = String::new();
    let mut members = Vec::new();
    let mut nested = Vec::new();
    while !decoder.is_empty() {
        let key = decoder.read_key()?;
        match (kind, key >> 3) {
            (_, 1) => name = decoder.read_string()?.to_string(),
            (_, 2) | (Kind::Message, 8) => members.push(name_in(decoder.read_slice()?)?),
            (Kind::Message, 3) => nested.push((Kind::Message, decoder.read_slice()?)),
            (Kind::Message, 4) => nested.push((Kind::Enum, decoder.read_slice()?)),
            _ => decoder.skip_value(key)?,
        }
    }
    let scoped = |name: &str| {
        if outer.is_empty() {
            name.to_owned()
        } else {
            format!("{outer}.{name}")
        }
    };
    let full = scoped(&name);
    for member in members {
        let member = if kind == Kind::Enum {
            scoped(&member)
        } else {
            format!("{full}.{member}")
        };
        symbols.push((member, false));
    }
    for (kind, inner) in nested {
        named(&mut Decoder::new(inner), kind, &full, symbols)?;
    }
    symbols.push((full, kind == Kind::Message));
    Ok(())
}

/// The name (field 1) of a field, enum value or method descriptor.
fn name_in(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut decoder = Decoder::new(bytes);
    let mut name = String::new();
    while !decoder.is_empty() {
        let key = decoder.read_key()?;
        if key >> 3 == 1 {
            name = decoder.read_string()?.to_string();
        } else {
            decoder.skip_value(key)?;
        }
    }
    Ok(name)
}

/// What a `ServerReflectionRequest` asks: `file_by_filename` (3), `file_containing_symbol`
/// (4), `file_containing_extension` (5), `all_extension_numbers_of_type` (6),
/// `list_services` (7). `host` (1) is not used.
fn read_request(request: &[u8]) -> Result<Ask, DecodeError> {
    let mut decoder = Decoder::new(request);
    let mut ask = Ask::Nothing;
    while !decoder.is_empty() {
        let key = decoder.read_key()?;
        ask = match key >> 3 {
            3 => Ask::File(decoder.read_string()?.to_string()),
            4 => Ask::Symbol(decoder.read_string()?.to_string()),
            5 => {
                decoder.skip_value(key)?;
                Ask::Extension
            }
            6 => Ask::ExtensionNumbers(decoder.read_string()?.to_string()),
            7 => {
                decoder.skip_value(key)?;
                Ask::ListServices
            }
            _ => {
                decoder.skip_value(key)?;
                continue;
            }
        };
    }
    Ok(ask)
}

/// An `ErrorResponse` (7): a gRPC status code and a message.
fn error(out: &mut Vec<u8>, code: u64, message: &str) {
    let mut error = Vec::new();
    wire::put_varint(&mut error, u64::from(wire::key(1, wire::WireType::Varint)));
    wire::put_varint(&mut error, code);
    put_len(&mut error, 2, message.as_bytes());
    put_len(out, 7, &error);
}

/// A length-delimited field: key, length, bytes.
pub(super) fn put_len(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    wire::put_varint(
        out,
        u64::from(wire::key(field, wire::WireType::LengthDelimited)),
    );
    wire::put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set of two files: `b.proto` (package `b`, message `B` with nested `E`, enum `K`)
    /// importing `a.proto` (package `a`, service `S` with method `M`).
    fn set() -> Vec<u8> {
        let mut a = Vec::new();
        put_len(&mut a, 1, b"a.proto");
        put_len(&mut a, 2, b"a");
        let mut method = Vec::new();
        put_len(&mut method, 1, b"M");
        let mut service = Vec::new();
        put_len(&mut service, 1, b"S");
        put_len(&mut service, 2, &method);
        put_len(&mut a, 6, &service);
        let mut b = Vec::new();
        put_len(&mut b, 1, b"b.proto");
        put_len(&mut b, 2, b"b");
        put_len(&mut b, 3, b"a.proto");
        let mut inner = Vec::new();
        put_len(&mut inner, 1, b"E");
        let mut message = Vec::new();
        put_len(&mut message, 1, b"B");
        put_len(&mut message, 3, &inner);
        put_len(&mut b, 4, &message);
        let mut en = Vec::new();
        put_len(&mut en, 1, b"K");
        put_len(&mut b, 5, &en);
        let mut set = Vec::new();
        put_len(&mut set, 1, &a);
        put_len(&mut set, 1, &b);
        set
    }

    #[test]
    fn every_symbol_is_found_in_its_file() {
        let r = Reflection::new([&set()[..]].into_iter(), vec!["a.S".into()]);
        for (symbol, file) in [
            ("a", "a.proto"),
            ("a.S", "a.proto"),
            ("a.S.M", "a.proto"),
            ("b.B", "b.proto"),
            ("b.B.E", "b.proto"),
            ("b.K", "b.proto"),
        ] {
            assert_eq!(
                r.symbols.get(symbol).map(String::as_str),
                Some(file),
                "{symbol}"
            );
        }
        assert!(!r.symbols.contains_key("B"));
    }

    #[test]
    fn the_health_service_is_described_down_to_its_nested_enum() {
        let set = super::super::health::descriptor_set();
        let r = Reflection::new([&set[..]].into_iter(), vec![]);
        for symbol in [
            "grpc.health.v1",
            "grpc.health.v1.Health",
            "grpc.health.v1.Health.Check",
            "grpc.health.v1.Health.Watch",
            "grpc.health.v1.HealthCheckRequest",
            "grpc.health.v1.HealthCheckResponse",
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
        ] {
            assert_eq!(
                r.symbols.get(symbol).map(String::as_str),
                Some("grpc/health/v1/health.proto"),
                "{symbol}"
            );
        }
        for (symbol, what) in [
            ("grpc.health.v1.HealthCheckRequest.service", "a field"),
            ("grpc.health.v1.HealthCheckResponse.status", "a field"),
            (
                "grpc.health.v1.HealthCheckResponse.SERVING",
                "an enum value, in the enum's scope",
            ),
            (
                "grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN",
                "another",
            ),
        ] {
            assert!(r.symbols.contains_key(symbol), "{what}: {symbol}");
        }
        assert_eq!(r.symbols.len(), 13, "{:?}", r.symbols);
    }

    /// The top-level fields an answer holds, by number.
    fn fields_of(answer: &[u8]) -> Vec<u32> {
        let mut decoder = Decoder::new(answer);
        let mut fields = Vec::new();
        while !decoder.is_empty() {
            let key = decoder.read_key().unwrap();
            fields.push(key >> 3);
            decoder.skip_value(key).unwrap();
        }
        fields
    }

    #[test]
    fn extension_numbers_are_none_for_a_message_and_not_found_for_anything_else() {
        let set = super::super::health::descriptor_set();
        let r = Reflection::new([&set[..]].into_iter(), vec![]);
        let ask = |symbol: &str| {
            let mut request = Vec::new();
            put_len(&mut request, 6, symbol.as_bytes());
            fields_of(&r.answer(&request))
        };
        // original_request (2), then an ExtensionNumberResponse (5) or an error (7).
        assert_eq!(ask("grpc.health.v1.HealthCheckRequest"), [2, 5]);
        for not_a_message in [
            "grpc.health.v1.Health",
            "grpc.health.v1.HealthCheckRequest.service",
            "grpc.health.v1",
            "no.Such",
        ] {
            assert_eq!(ask(not_a_message), [2, 7], "{not_a_message}");
        }
    }

    #[test]
    fn a_file_comes_with_its_imports_and_an_unknown_one_is_not_found() {
        let r = Reflection::new([&set()[..]].into_iter(), vec![]);
        let mut ask = Vec::new();
        put_len(&mut ask, 4, b"b.B.E");
        let answer = r.answer(&ask);
        // original_request, then a FileDescriptorResponse with b.proto, then a.proto.
        let mut d = Decoder::new(&answer);
        assert_eq!(d.read_key().unwrap() >> 3, 2);
        assert_eq!(d.read_slice().unwrap(), &ask[..]);
        assert_eq!(d.read_key().unwrap() >> 3, 4);
        let mut files = Decoder::new(d.read_slice().unwrap());
        let mut names = Vec::new();
        while !files.is_empty() {
            files.read_key().unwrap();
            let mut file = Decoder::new(files.read_slice().unwrap());
            file.read_key().unwrap();
            names.push(file.read_string().unwrap().to_string());
        }
        assert_eq!(names, ["b.proto", "a.proto"]);

        let mut ask = Vec::new();
        put_len(&mut ask, 4, b"no.Such");
        let answer = r.answer(&ask);
        assert!(answer.windows(7).any(|w| w == b"no.Such"));
        let mut d = Decoder::new(&answer);
        d.read_key().unwrap();
        d.read_slice().unwrap();
        assert_eq!(d.read_key().unwrap() >> 3, 7, "an error response");
    }
}
