//! How the cloud's identifiers are keys and values of the store: order-preserving encodings of the typed
//! ids, and [`Pair`], the key of tables keyed by two things.

use nimbus_protocol::ids::{
    FlavorId, FloatingIpId, HostId, ImageId, InstanceId, NetworkId, PoolId, PortId, ProjectId, UserId,
};
use uuid::Uuid;

use crate::codec::{KeyCodec, Record};

macro_rules! uuid_keys {
    ($($name:ident),*) => {$(
        impl KeyCodec for $name {
            fn encode_key(&self) -> Vec<u8> {
                self.0.as_bytes().to_vec()
            }
            fn decode_key(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map($name)
            }
        }
        impl Record for $name {
            const KIND: &'static str = $name::KIND;
            const VERSION: u8 = 1;
        }
    )*};
}
uuid_keys!(ProjectId, UserId, InstanceId, ImageId, NetworkId, FloatingIpId, PortId, PoolId);

macro_rules! string_keys {
    ($($name:ident),*) => {$(
        impl KeyCodec for $name {
            fn encode_key(&self) -> Vec<u8> {
                self.0.as_bytes().to_vec()
            }
            fn decode_key(bytes: &[u8]) -> Option<Self> {
                String::from_utf8(bytes.to_vec()).ok().map($name)
            }
        }
    )*};
}
string_keys!(FlavorId, HostId);

/// Two keys joined, for tables keyed by a pair (e.g. user and project). Each part is length-prefixed so the
/// encoding is unambiguous and all entries of one first part sort together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair<A, B>(pub A, pub B);

impl<A: KeyCodec, B> Pair<A, B> {
    /// The encoded prefix shared by every pair whose first part is `a`, for [`crate::table::Reads::scan_prefix`].
    pub fn prefix(a: &A) -> Vec<u8> {
        let a = a.encode_key();
        let len = u16::try_from(a.len()).expect("key parts are short");
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&a);
        out
    }
}

impl<A: KeyCodec, B: KeyCodec> KeyCodec for Pair<A, B> {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = Pair::<A, B>::prefix(&self.0);
        out.extend_from_slice(&self.1.encode_key());
        out
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let len = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
        let a = A::decode_key(bytes.get(2..2 + len)?)?;
        let b = B::decode_key(bytes.get(2 + len..)?)?;
        Some(Pair(a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_and_id_keys_round_trip() {
        let key = Pair(HostId("h".into()), 7u32);
        assert_eq!(Pair::<HostId, u32>::decode_key(&key.encode_key()), Some(key));
        let id = InstanceId::random();
        assert_eq!(InstanceId::decode_key(&id.encode_key()), Some(id));
    }
}
