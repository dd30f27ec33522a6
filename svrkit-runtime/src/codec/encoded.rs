//! A message that is already bytes: what callers without generated types send and receive.

use bytes::Bytes;

use super::decoder::Decoder;
use super::error::DecodeError;
use super::message::Message;
use super::unknown::UnknownFields;

/// An encoded message, passed through as it is.
///
/// Tools that know a schema only at run time (`svrkit call` and `svrkit bench` build requests
/// from JSON with the IDL's dynamic codec) hand one of these to
/// [`Channel::call`](crate::Channel::call) as the request and get one back as the response:
/// the bytes go on the wire unchanged, and a response is taken whole without being parsed
/// (decoding from [`Bytes`] shares them, without a copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded(pub Bytes);

impl Message for Encoded {
    const NAME: &'static str = "<encoded>";

    fn encode_raw(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.0);
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn merge_field(&mut self, key: u32, d: &mut Decoder<'_>) -> Result<(), DecodeError> {
        // Only reached through `merge` on a decoder of someone else's making: append the
        // field as it was (the decode methods below take the input whole instead).
        let mut field = UnknownFields::default();
        d.skip_unknown(key, &mut field)?;
        let mut buf = Vec::with_capacity(self.0.len() + field.encoded_len());
        buf.extend_from_slice(&self.0);
        field.encode(&mut buf);
        self.0 = Bytes::from(buf);
        Ok(())
    }

    fn field_name(_: u32) -> Option<&'static str> {
        None
    }

    fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        Ok(Encoded(Bytes::copy_from_slice(buf)))
    }

    fn decode_bytes(buf: &Bytes) -> Result<Self, DecodeError> {
        Ok(Encoded(buf.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_bytes_through_and_merges_fields_as_they_were() {
        let bytes = Bytes::from_static(&[0x08, 0x96, 0x01, 0x12, 0x01, b'a']);
        assert_eq!(
            Encoded::decode_bytes(&bytes).unwrap().encode_to_vec(),
            bytes
        );
        let mut merged = Encoded::default();
        merged.merge(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(merged.0, bytes);
    }
}
