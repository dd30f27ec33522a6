//! A tour of generated code: build a message, encode it, decode it, and relay a field this
//! schema does not know.
//!
//! `cargo run -p svrkit-examples --bin codec_tour`

use svrkit_examples::im::{common, message};
use svrkit_runtime::Bytes;
use svrkit_runtime::codec::Message as _;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let msg = message::Message {
        from_user: "alice".into(),
        seq: 300,
        msg_type: message::MsgType::IMAGE,
        content: Bytes::from_static(b"hi"),
        at_users: vec!["bob".into()],
        sender: common::UserRef {
            uin: 7,
            ..Default::default()
        },
        ..Default::default()
    };
    let wire = msg.encode_to_bytes();
    println!("{msg:#?}");
    println!("{} bytes: {}", wire.len(), hex(&wire));

    let back = message::Message::decode_bytes(&wire)?;
    assert_eq!(back, msg);
    println!("decoded back: equal");

    // A newer peer added field 20 (a string); this older build keeps it and writes it back.
    let mut newer = wire.to_vec();
    newer.extend_from_slice(&[0xa2, 0x01, 0x03, b'n', b'e', b'w']);
    let relayed = message::Message::decode(&newer)?;
    println!("unknown fields kept: {:?}", relayed.unknown_fields);
    assert_eq!(relayed.encode_to_vec(), newer);
    println!("relayed byte for byte: yes");

    // Bad input is an error that names the field, never a panic.
    let err = message::Message::decode(&[0x0a, 0x02, 0xff, 0xfe]).unwrap_err();
    println!("bad input: {err}");
    Ok(())
}
