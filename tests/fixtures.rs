// The IDL fixtures compiled both by svrkit and, from `svrkit proto`'s export, by protoc:
// `include!`d by `build.rs` and by the tests that compare the two.
const FIXTURES: [&str; 5] = [
    "im/message.xml",
    "test/all_types.xml",
    "bench/chat.xml",
    "test/rpc.xml",
    "test/overload.xml",
];
