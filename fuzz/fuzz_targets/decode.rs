//! Decodes arbitrary bytes as every fixture struct; any panic, overflow or runaway allocation
//! is a bug. `tests/codec_malformed.rs` runs the same property under proptest in CI.
//!
//! Run with `cargo +nightly fuzz run decode` from this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use svrkit_runtime::codec::Message;
use svrkit_tests::svrkit::test::all_types::{AllTypes, Maps, Tree};
use svrkit_tests::svrkit::test::evolution_v1::Profile;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = AllTypes::decode(data) {
        // Whatever decodes must re-encode to something that decodes to the same value.
        let again = AllTypes::decode(&v.encode_to_vec()).expect("re-encoded value decodes");
        assert_eq!(again.encoded_len(), v.encoded_len());
    }
    let _ = Tree::decode(data);
    let _ = Maps::decode_bytes(&bytes::Bytes::copy_from_slice(data));
    if let Ok(p) = Profile::decode(data) {
        assert_eq!(p.encoded_len(), p.encode_to_vec().len());
    }
});
