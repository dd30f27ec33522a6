//! The standard gRPC health service (`grpc.health.v1.Health`), which Kubernetes' gRPC probe,
//! Envoy and `grpc_health_probe` ask.
//!
//! `Check` answers from the server's readiness: `SERVING` while it serves and its readiness
//! says yes (with a configured server, every readiness check of `crate::monitor::health`
//! passes: what `/readyz` answers from), `NOT_SERVING` otherwise and once the server drains
//! or shuts down. The service name
//! may be empty (the whole server) or a hosted service's full name; another name is
//! `NOT_FOUND`, as the protocol asks. `Watch` is not offered (`UNIMPLEMENTED`): probes poll.

use bytes::Bytes;

use super::super::Shared;
use crate::codec::Decoder;
use crate::status::Status;

/// The path of `Check`.
pub(super) const CHECK: &str = "/grpc.health.v1.Health/Check";

/// What the paths of the service's methods start with.
pub(super) const PREFIX: &str = "/grpc.health.v1.Health/";

/// `HealthCheckResponse.ServingStatus`.
const SERVING: u8 = 1;
const NOT_SERVING: u8 = 2;

/// Answers a `HealthCheckRequest` (field 1: the service name) with an encoded
/// `HealthCheckResponse` (field 1: the status).
pub(super) fn check(shared: &Shared, request: Bytes) -> Result<Bytes, Status> {
    let request =
        crate::grpc_wire::unframe(request).map_err(|(code, message)| Status::new(code, message))?;
    let service = service_name(&request).map_err(|e| {
        Status::invalid_argument(format!("a HealthCheckRequest that does not decode: {e}"))
    })?;
    if !service.is_empty() && !shared.grpc.hosts_service(&service) {
        return Err(Status::not_found(format!("no service {service} here")));
    }
    let status = if shared.serving() {
        SERVING
    } else {
        NOT_SERVING
    };
    Ok(Bytes::from(vec![0x08, status]))
}

/// The service's schema for reflection, as a `FileDescriptorSet` of the gRPC project's
/// `grpc/health/v1/health.proto` (its messages, enum and both methods; `Watch` answers
/// `UNIMPLEMENTED` here), so that `grpcurl` and other reflection clients can call `Check`
/// with no `.proto` at hand.
pub(super) fn descriptor_set() -> Vec<u8> {
    use super::reflection::put_len;
    /// A `FieldDescriptorProto`: name (1), number (3), label optional (4), type (5),
    /// type name (6), JSON name (10).
    fn field(name: &str, json: &str, kind: u64, type_name: Option<&str>) -> Vec<u8> {
        let mut f = Vec::new();
        put_len(&mut f, 1, name.as_bytes());
        f.extend_from_slice(&[3 << 3, 1, 4 << 3, 1, 5 << 3, kind as u8]);
        if let Some(t) = type_name {
            put_len(&mut f, 6, t.as_bytes());
        }
        put_len(&mut f, 10, json.as_bytes());
        f
    }
    const STRING: u64 = 9;
    const ENUM: u64 = 14;

    let mut request = Vec::new();
    put_len(&mut request, 1, b"HealthCheckRequest");
    put_len(&mut request, 2, &field("service", "service", STRING, None));

    let mut statuses = Vec::new();
    put_len(&mut statuses, 1, b"ServingStatus");
    for (number, name) in ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
        .iter()
        .enumerate()
    {
        let mut value = Vec::new();
        put_len(&mut value, 1, name.as_bytes());
        value.extend_from_slice(&[2 << 3, number as u8]);
        put_len(&mut statuses, 2, &value);
    }
    let mut response = Vec::new();
    put_len(&mut response, 1, b"HealthCheckResponse");
    put_len(
        &mut response,
        2,
        &field(
            "status",
            "status",
            ENUM,
            Some(".grpc.health.v1.HealthCheckResponse.ServingStatus"),
        ),
    );
    put_len(&mut response, 4, &statuses);

    let mut service = Vec::new();
    put_len(&mut service, 1, b"Health");
    for (name, streaming) in [("Check", false), ("Watch", true)] {
        let mut method = Vec::new();
        put_len(&mut method, 1, name.as_bytes());
        put_len(&mut method, 2, b".grpc.health.v1.HealthCheckRequest");
        put_len(&mut method, 3, b".grpc.health.v1.HealthCheckResponse");
        if streaming {
            method.extend_from_slice(&[6 << 3, 1]);
        }
        put_len(&mut service, 2, &method);
    }

    let mut file = Vec::new();
    put_len(&mut file, 1, b"grpc/health/v1/health.proto");
    put_len(&mut file, 2, b"grpc.health.v1");
    put_len(&mut file, 4, &request);
    put_len(&mut file, 4, &response);
    put_len(&mut file, 6, &service);
    put_len(&mut file, 12, b"proto3");
    let mut set = Vec::new();
    put_len(&mut set, 1, &file);
    set
}

/// The full name reflection lists the service under.
pub(super) const SERVICE: &str = "grpc.health.v1.Health";

/// Field 1 of a `HealthCheckRequest`; other fields are skipped, as protobuf readers do.
fn service_name(request: &[u8]) -> Result<String, crate::codec::DecodeError> {
    let mut decoder = Decoder::new(request);
    let mut name = String::new();
    while !decoder.is_empty() {
        let key = decoder.read_key()?;
        if key == (1 << 3 | 2) {
            name = decoder.read_string()?.to_string();
        } else {
            decoder.skip_value(key)?;
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_service_name_is_read_and_other_fields_skipped() {
        assert_eq!(super::service_name(b"").unwrap(), "");
        assert_eq!(super::service_name(b"\x0a\x05hello").unwrap(), "hello");
        assert_eq!(
            super::service_name(b"\x10\x07\x0a\x02hi").unwrap(),
            "hi",
            "an unknown varint field first"
        );
        assert!(super::service_name(b"\x0a\x09hi").is_err());
    }
}
