//! The encoding of message payloads that may cross nodes: serde values, bincode 2 on the wire.

use ractor::BytesConvertable;
use serde::{Serialize, de::DeserializeOwned};

/// A serde value carried in a cluster message. `#[derive(RactorClusterMessage)]` needs every field to be
/// [`BytesConvertable`]; wrapping payloads (and replies) in `Wire` gives them bincode encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire<T>(pub T);

impl<T: Serialize + DeserializeOwned> BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        bincode::serde::encode_to_vec(&self.0, bincode::config::standard())
            .expect("message payloads are plain data and always encode")
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        // ractor's decode hook is infallible: a payload from an incompatible peer panics here, and ractor drops
        // the message; the caller then sees its call time out.
        let (value, _) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .expect("a message payload from a compatible nimbus");
        Wire(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trips() {
        let value: Result<Vec<String>, String> = Ok(vec!["a".into(), "b".into()]);
        let bytes = Wire(value.clone()).into_bytes();
        assert_eq!(Wire::<Result<Vec<String>, String>>::from_bytes(bytes).0, value);
    }
}
