use svrkit_runtime::codec::Message;

svrkit_macros::idl!("chat.xml");

fn main() {
    let msg = demo::chat::Msg {
        from: demo::users::User { uin: 42, ..Default::default() },
        kind: demo::chat::Kind::IMAGE,
        body: "hi".into(),
        reply_to: Some(Box::default()),
        ..Default::default()
    };
    assert_eq!(msg.r#type, 7);
    let bytes = msg.encode_to_vec();
    assert_eq!(demo::chat::Msg::decode(&bytes).unwrap(), msg);
}
