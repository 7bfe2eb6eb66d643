//! Typed identifiers: one newtype per kind of thing, never bare strings or integers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{KeyCodec, Record};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn random() -> Self {
                $name(Uuid::new_v4())
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($kind, ":{}"), self.0.hyphenated())
            }
        }
        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
        impl KeyCodec for $name {
            fn encode_key(&self) -> Vec<u8> {
                self.0.as_bytes().to_vec()
            }
            fn decode_key(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map($name)
            }
        }
        impl Record for $name {
            const KIND: &'static str = $kind;
            const VERSION: u8 = 1;
        }
    };
}

uuid_id!(ProjectId, "project");
uuid_id!(UserId, "user");
uuid_id!(InstanceId, "instance");
uuid_id!(ImageId, "image");
uuid_id!(NetworkId, "network");
uuid_id!(FloatingIpId, "floating_ip");
uuid_id!(
    /// A virtual interface of an instance (a Network API port).
    PortId,
    "port"
);
uuid_id!(
    /// A floating pool, as the Network API shows it (an external network).
    PoolId,
    "pool"
);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
        pub struct $name(pub String);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl KeyCodec for $name {
            fn encode_key(&self) -> Vec<u8> {
                self.0.as_bytes().to_vec()
            }
            fn decode_key(bytes: &[u8]) -> Option<Self> {
                String::from_utf8(bytes.to_vec()).ok().map($name)
            }
        }
    };
}

string_id!(
    /// A flavor's id as the API shows it (nova's classic flavors are "1" to "5").
    FlavorId
);
string_id!(
    /// A compute host's name, e.g. `host-0003`; also its topic suffix (`compute.host-0003`).
    HostId
);

impl From<&str> for HostId {
    fn from(s: &str) -> Self {
        HostId(s.to_string())
    }
}

/// Two keys joined, for tables keyed by a pair (e.g. user and project). Each part is length-prefixed so the
/// encoding is unambiguous and all entries of one first part sort together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair<A, B>(pub A, pub B);

impl<A: KeyCodec, B> Pair<A, B> {
    /// The encoded prefix shared by every pair whose first part is `a`, for [`crate::Reads::scan_prefix`].
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
    fn pair_keys_round_trip() {
        let key = Pair(HostId("h".into()), 7u32);
        assert_eq!(Pair::<HostId, u32>::decode_key(&key.encode_key()), Some(key));
        let id = InstanceId::random();
        assert_eq!(id.to_string().parse::<InstanceId>().unwrap(), id);
    }
}
