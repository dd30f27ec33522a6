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
