//! What gRPC's HTTP/2 mapping says beside the message, for both sides (`server/grpc/`,
//! `client/grpc.rs`): the five-byte message prefix, the `grpc-timeout` header, status codes
//! both ways, `grpc-message`'s percent-encoding and the W3C `traceparent` header (see
//! `docs/grpc.md`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::status::Code;

/// The bytes before each message: a compressed flag and the length, big-endian.
pub(crate) const PREFIX: usize = 5;

/// `message` with its prefix (uncompressed).
pub(crate) fn framed(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(PREFIX + message.len());
    out.put_u8(0);
    // Responses are checked against the frame limit (4 MiB by default), far below 4 GiB.
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// A unary request's body, from everything the stream carried: exactly one uncompressed
/// message. The error says what was wrong, with gRPC's code for it (statuscodes.md): a
/// number of messages other than one is `UNIMPLEMENTED` ("cardinality violation"), a message
/// cut short or flagged compressed (when no compression was agreed) `INTERNAL`.
pub(crate) fn unframe(mut body: Bytes) -> Result<Bytes, (Code, &'static str)> {
    if body.is_empty() {
        return Err((
            Code::UNIMPLEMENTED,
            "a unary call must send exactly one message; this one sent none",
        ));
    }
    if body.len() < PREFIX {
        return Err((Code::INTERNAL, "the message's prefix is cut short"));
    }
    if body[0] != 0 {
        return Err((
            Code::INTERNAL,
            "a message flagged compressed, and no compression agreed (grpc-encoding identity)",
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    match (body.len() - PREFIX).cmp(&len) {
        std::cmp::Ordering::Less => {
            return Err((
                Code::INTERNAL,
                "the message is shorter than its prefix says",
            ));
        }
        std::cmp::Ordering::Greater => {
            return Err((
                Code::UNIMPLEMENTED,
                "a unary call must send exactly one message; this one sent more",
            ));
        }
        std::cmp::Ordering::Equal => {}
    }
    let _ = body.split_to(PREFIX);
    Ok(body)
}

/// A `grpc-timeout` value for `ms` milliseconds: at most eight digits, in milliseconds or
/// (for longer ones) seconds, rounded up.
pub(crate) fn timeout_value(ms: u32) -> String {
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", ms.div_ceil(1000))
    }
}

/// A `grpc-timeout` value (`TimeoutValue TimeoutUnit`: at most eight digits and one of
/// `H M S m u n`) in milliseconds, rounded up so that a short deadline is not read as none;
/// `None` when malformed. Clamped to `u32::MAX`.
pub(crate) fn timeout_ms(value: &[u8]) -> Option<u32> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let ms = match unit {
        b'H' => n * 3_600_000,
        b'M' => n * 60_000,
        b'S' => n * 1_000,
        b'm' => n,
        b'u' => n.div_ceil(1_000),
        b'n' => n.div_ceil(1_000_000),
        _ => return None,
    };
    // Zero means "the method's default" on svrkit's wire: a deadline of 0 ms has passed.
    Some(u32::try_from(ms).unwrap_or(u32::MAX).max(1))
}

/// The gRPC status code for a svrkit one. Application codes (1000 and up) have no gRPC
/// counterpart: they go as `UNKNOWN` with the svrkit code in `svrkit-status`.
pub(crate) fn grpc_code(code: Code) -> u32 {
    match code {
        Code::OK => 0,
        Code::CANCELLED => 1,
        Code::INVALID_ARGUMENT => 3,
        Code::DEADLINE_EXCEEDED => 4,
        Code::NOT_FOUND => 5,
        // Overload is "try again elsewhere or later", which gRPC clients read UNAVAILABLE as.
        Code::UNAVAILABLE | Code::OVERLOADED => 14,
        Code::UNIMPLEMENTED => 12,
        Code::INTERNAL => 13,
        Code::TOO_LARGE | Code::RESOURCE_EXHAUSTED => 8,
        Code::UNAUTHENTICATED => 16,
        Code::PERMISSION_DENIED => 7,
        _ => 2,
    }
}

/// The svrkit status code for a gRPC one (a svrkit client calling a gRPC server).
pub(crate) fn svrkit_code(grpc: u32) -> Code {
    match grpc {
        0 => Code::OK,
        1 => Code::CANCELLED,
        3 | 9 | 11 => Code::INVALID_ARGUMENT,
        4 => Code::DEADLINE_EXCEEDED,
        5 => Code::NOT_FOUND,
        7 => Code::PERMISSION_DENIED,
        8 => Code::RESOURCE_EXHAUSTED,
        12 => Code::UNIMPLEMENTED,
        14 => Code::UNAVAILABLE,
        16 => Code::UNAUTHENTICATED,
        // UNKNOWN, ALREADY_EXISTS, ABORTED, DATA_LOSS and codes from the future.
        _ => Code::INTERNAL,
    }
}

/// A `grpc-message` value decoded: `%XX` sequences to bytes, then UTF-8 (lossily: the
/// message is for people).
pub(crate) fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = value
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (value[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` percent-encoded as `grpc-message` requires: bytes outside printable ASCII, and
/// `%`, as `%XX`.
pub(crate) fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The trace id and parent span id of a W3C `traceparent` header
/// (`00-<32 hex>-<16 hex>-<2 hex>`), unless it is malformed or either id is all zeros.
pub(crate) fn traceparent(value: &[u8]) -> Option<(Bytes, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    // Version 00 has exactly four parts; later versions may add more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.len() != 32 || !trace.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = Vec::with_capacity(16);
    for pair in trace.as_bytes().chunks(2) {
        let hex = std::str::from_utf8(pair).ok()?;
        id.push(u8::from_str_radix(hex, 16).ok()?);
    }
    if !parent.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let parent = u64::from_str_radix(parent, 16).ok()?;
    (id.iter().any(|&b| b != 0) && parent != 0).then(|| (Bytes::from(id), parent))
}

/// A W3C `traceparent` for `trace_id` (16 bytes) with `parent` as the parent span, sampled.
pub(crate) fn traceparent_of(trace_id: &[u8], parent: u64) -> String {
    let hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{hex}-{parent:016x}-01")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_in_every_unit_round_up_to_milliseconds() {
        assert_eq!(timeout_ms(b"1H"), Some(3_600_000));
        assert_eq!(timeout_ms(b"2M"), Some(120_000));
        assert_eq!(timeout_ms(b"3S"), Some(3_000));
        assert_eq!(timeout_ms(b"250m"), Some(250));
        assert_eq!(timeout_ms(b"1500u"), Some(2));
        assert_eq!(timeout_ms(b"999999n"), Some(1));
        assert_eq!(timeout_ms(b"0m"), Some(1));
        assert_eq!(timeout_ms(b"99999999H"), Some(u32::MAX));
        for bad in [&b""[..], b"m", b"123456789m", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(timeout_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_message_is_framed_and_unframed() {
        let framed = framed(b"abc");
        assert_eq!(&framed[..], b"\0\0\0\0\x03abc");
        assert_eq!(&unframe(framed).unwrap()[..], b"abc");
        assert_eq!(unframe(Bytes::new()).unwrap_err().0, Code::UNIMPLEMENTED);
        assert_eq!(
            unframe(Bytes::from_static(b"\x01\0\0\0\0")).unwrap_err().0,
            Code::INTERNAL
        );
        // Two messages, or a prefix longer than what came.
        let two = Bytes::from_static(b"\0\0\0\0\x01a\0\0\0\0\x01b");
        assert_eq!(unframe(two).unwrap_err().0, Code::UNIMPLEMENTED);
        let short = Bytes::from_static(b"\0\0\0\0\x09abc");
        assert_eq!(unframe(short).unwrap_err().0, Code::INTERNAL);
        assert_eq!(
            unframe(Bytes::from_static(b"\0\0")).unwrap_err().0,
            Code::INTERNAL
        );
        assert_eq!(timeout_value(250), "250m");
        assert_eq!(timeout_value(u32::MAX), "4294968S");
    }

    #[test]
    fn statuses_map_to_grpc_codes_of_the_same_meaning() {
        // gRPC's numbering (grpc/doc/statuscodes.md).
        let pairs = [
            (Code::OK, 0),
            (Code::CANCELLED, 1),
            (Code::INVALID_ARGUMENT, 3),
            (Code::DEADLINE_EXCEEDED, 4),
            (Code::NOT_FOUND, 5),
            (Code::PERMISSION_DENIED, 7),
            (Code::RESOURCE_EXHAUSTED, 8),
            (Code::TOO_LARGE, 8),
            (Code::UNIMPLEMENTED, 12),
            (Code::INTERNAL, 13),
            (Code::UNAVAILABLE, 14),
            (Code::OVERLOADED, 14),
            (Code::UNAUTHENTICATED, 16),
            (Code(1001), 2),
        ];
        for (code, grpc) in pairs {
            assert_eq!(grpc_code(code), grpc, "{code:?}");
        }
    }

    #[test]
    fn messages_are_percent_encoded_and_decoded() {
        assert_eq!(percent_encode("no 100% é\n"), "no 100%25 %C3%A9%0A");
        assert_eq!(percent_decode(b"no 100%25 %C3%A9%0A"), "no 100% é\n");
        // A stray `%` stays as it is.
        assert_eq!(percent_decode(b"50% off %zz"), "50% off %zz");
    }

    #[test]
    fn grpc_codes_map_back_to_the_svrkit_code_of_the_same_meaning() {
        for code in [
            Code::OK,
            Code::CANCELLED,
            Code::INVALID_ARGUMENT,
            Code::DEADLINE_EXCEEDED,
            Code::NOT_FOUND,
            Code::UNAVAILABLE,
            Code::UNIMPLEMENTED,
            Code::INTERNAL,
            Code::UNAUTHENTICATED,
            Code::PERMISSION_DENIED,
            Code::RESOURCE_EXHAUSTED,
        ] {
            assert_eq!(svrkit_code(grpc_code(code)), code, "{code:?}");
        }
        assert_eq!(svrkit_code(2), Code::INTERNAL, "UNKNOWN");
    }

    #[test]
    fn traceparent_gives_its_trace_id_and_parent() {
        let (id, parent) =
            traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            &id[..],
            &[
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ][..]
        );
        assert_eq!(parent, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(
            traceparent_of(&id, parent),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            b"00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-+0f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert_eq!(traceparent(bad), None, "{bad:?}");
        }
    }
}
