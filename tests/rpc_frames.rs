//! The frame format as documented in `docs/protocol.md`, and compatibility with newer peers.

use bytes::BytesMut;
use svrkit_runtime::codec::Message;
use svrkit_runtime::frame::{self, FrameError, FrameKind, Header};
use svrkit_tests::svrkit::test::rpc::EchoReq;

fn documented_frame() -> Vec<u8> {
    let header = Header {
        kind: FrameKind::REQUEST,
        request_id: 7,
        service_id: 9100,
        method_id: 1,
        deadline_ms: 2000,
        priority: svrkit_runtime::service::Priority::Normal.to_wire(),
        caller: "tests".into(),
        ..Default::default()
    };
    let body = EchoReq {
        text: "hi".into(),
        seq: 1,
        ..Default::default()
    };
    let mut out = Vec::new();
    frame::encode_message(&header, &body, &mut out);
    out
}

fn hex_block(doc: &str) -> Vec<u8> {
    let block = doc
        .split("```hex\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("hex block");
    block
        .lines()
        .flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

#[test]
fn the_example_in_the_protocol_doc_is_what_we_send() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
        .unwrap();
    let ours = documented_frame();
    let hex: Vec<String> = ours.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex_block(&doc),
        ours,
        "docs/protocol.md is out of date; the frame is now: {}",
        hex.join(" ")
    );
    let mut buf = BytesMut::from(&ours[..]);
    let frame = frame::Decoder::new(1 << 20)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(frame.header.service_id, 9100);
    assert_eq!(EchoReq::decode(&frame.body).unwrap().text, "hi");
    assert!(buf.is_empty());
}

#[test]
fn a_newer_peer_with_more_header_fields_and_a_higher_version_is_understood() {
    let mut frame_bytes = documented_frame();
    // Version 9, and an extra header field 40 (a string) the current header does not know.
    frame_bytes[2] = 9;
    let header_len = u32::from_be_bytes(frame_bytes[4..8].try_into().unwrap()) as usize;
    let extra = [0xc2, 0x02, 0x03, b'n', b'e', b'w'];
    let at = frame::PREFIX_LEN + header_len;
    frame_bytes.splice(at..at, extra);
    frame_bytes[4..8].copy_from_slice(&((header_len + extra.len()) as u32).to_be_bytes());
    let mut buf = BytesMut::from(&frame_bytes[..]);
    let frame = frame::Decoder::new(1 << 20)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert_eq!(
        (frame.header.kind, frame.header.request_id),
        (FrameKind::REQUEST, 7)
    );
    assert_eq!(frame.header.unknown_fields.iter().next().unwrap().id, 40);
    assert_eq!(EchoReq::decode(&frame.body).unwrap().seq, 1);
}

#[test]
fn partial_frames_wait_and_bad_prefixes_fail_early() {
    let whole = documented_frame();
    let decoder = frame::Decoder::new(1 << 20);
    for cut in 0..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert!(
            decoder.decode(&mut buf).unwrap().is_none(),
            "a {cut}-byte prefix is not a frame yet"
        );
    }
    let mut garbage = BytesMut::from(&b"GE"[..]);
    assert!(matches!(
        decoder.decode(&mut garbage),
        Err(FrameError::BadMagic(_))
    ));
    let mut huge = BytesMut::from(&whole[..frame::PREFIX_LEN]);
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decoder.decode(&mut huge),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(
        huge.capacity() < 1 << 20,
        "nothing was reserved for the announced size"
    );
}
