//! How the cloud's identifiers are keys and values of the store: order-preserving encodings of the typed
//! ids, [`Pair`], the key of tables keyed by two things, and [`NewestFirst`], the key of server lists.

use nimbus_protocol::ids::{
    FlavorId, FloatingIpId, HostId, ImageId, InstanceId, NetworkId, PoolId, PortId, ProjectId, UserId,
};
use uuid::Uuid;

use crate::codec::{KeyCodec, Record};
use crate::records::{Instance, Millis};

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

/// An instance's place in a server list: newest first, then by id (Nova's default order), encoded so that
/// the store's key order is that order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewestFirst {
    pub created_at: Millis,
    pub id: InstanceId,
}

impl NewestFirst {
    pub fn of(instance: &Instance) -> Self {
        NewestFirst { created_at: instance.created_at, id: instance.id }
    }
}

impl KeyCodec for NewestFirst {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = (Millis::MAX - self.created_at).to_be_bytes().to_vec();
        out.extend_from_slice(&self.id.encode_key());
        out
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let (age, id) = bytes.split_at_checked(8)?;
        let created_at = Millis::MAX - Millis::from_be_bytes(age.try_into().ok()?);
        Some(NewestFirst { created_at, id: InstanceId::decode_key(id)? })
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

    #[test]
    fn newest_first_keys_sort_newest_first_then_by_id() {
        let ids = [InstanceId::random(), InstanceId::random()];
        let (low, high) = if ids[0].encode_key() < ids[1].encode_key() { (ids[0], ids[1]) } else { (ids[1], ids[0]) };
        let expected = [
            NewestFirst { created_at: 2_000, id: low },
            NewestFirst { created_at: 2_000, id: high },
            NewestFirst { created_at: 1_000, id: low },
            NewestFirst { created_at: 0, id: low },
        ];
        let mut keys: Vec<Vec<u8>> = expected.iter().rev().map(KeyCodec::encode_key).collect();
        keys.sort();
        let decoded: Vec<NewestFirst> = keys.iter().map(|k| NewestFirst::decode_key(k).unwrap()).collect();
        assert_eq!(decoded, expected);
        let project = ProjectId::random();
        let in_project = Pair(project, expected[2]);
        assert_eq!(Pair::<ProjectId, NewestFirst>::decode_key(&in_project.encode_key()), Some(in_project));
    }
}
