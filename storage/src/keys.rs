//! How the cloud's identifiers are keys and values of the store: order-preserving encodings of the typed
//! ids, [`Pair`], the key of tables keyed by two things, [`NewestFirst`], the key of server lists, and
//! [`NetworkChoice`], the order networks are given to instances in.

use nimbus_protocol::ids::{
    FlavorId, FloatingIpId, HostId, ImageId, InstanceId, NetworkId, PoolId, PortId, ProjectId, SecurityGroupId,
    SecurityRuleId, UserId,
};
use uuid::Uuid;

use crate::codec::{KeyCodec, Record};
use crate::records::{Instance, Millis, Network, NetworkMode};

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
uuid_keys!(
    ProjectId,
    UserId,
    InstanceId,
    ImageId,
    NetworkId,
    FloatingIpId,
    PortId,
    PoolId,
    SecurityGroupId,
    SecurityRuleId
);

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

/// Where a network stands among those an instance may get: under the project it is bound to, or (unbound)
/// under its mode; within either, by segment (none first), age and range (the order `network_for` picks in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkChoice {
    pub owner: NetworkOwner,
    pub vlan: Option<u16>,
    pub created_at: Millis,
    pub first_address: u32,
    pub id: NetworkId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkOwner {
    Unbound(NetworkMode),
    Project(ProjectId),
}

impl NetworkOwner {
    /// The encoded prefix every network of this owner's choice shares.
    pub fn prefix(&self) -> Vec<u8> {
        match self {
            NetworkOwner::Unbound(mode) => vec![0, mode_code(*mode)],
            NetworkOwner::Project(p) => [&[1u8][..], p.0.as_bytes()].concat(),
        }
    }
}

fn mode_code(mode: NetworkMode) -> u8 {
    match mode {
        NetworkMode::Flat => 0,
        NetworkMode::FlatDhcp => 1,
        NetworkMode::Vlan => 2,
    }
}

impl NetworkChoice {
    pub fn of(network: &Network) -> Self {
        NetworkChoice {
            owner: network.project.map_or(NetworkOwner::Unbound(network.mode), NetworkOwner::Project),
            vlan: network.vlan,
            created_at: network.created_at,
            first_address: u32::from(network.cidr.network()),
            id: network.id,
        }
    }
}

impl KeyCodec for NetworkChoice {
    fn encode_key(&self) -> Vec<u8> {
        let mut out = self.owner.prefix();
        let (tag, vlan) = self.vlan.map_or((0u8, 0u16), |v| (1, v));
        out.push(tag);
        out.extend_from_slice(&vlan.to_be_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.first_address.to_be_bytes());
        out.extend_from_slice(&self.id.encode_key());
        out
    }
    fn decode_key(bytes: &[u8]) -> Option<Self> {
        let (owner, rest) = match *bytes.first()? {
            0 => {
                let code = *bytes.get(1)?;
                let modes = [NetworkMode::Flat, NetworkMode::FlatDhcp, NetworkMode::Vlan];
                (NetworkOwner::Unbound(modes.into_iter().find(|m| mode_code(*m) == code)?), bytes.get(2..)?)
            }
            1 => (NetworkOwner::Project(ProjectId::decode_key(bytes.get(1..17)?)?), bytes.get(17..)?),
            _ => return None,
        };
        let vlan = match rest.first()? {
            0 => None,
            _ => Some(u16::from_be_bytes(rest.get(1..3)?.try_into().ok()?)),
        };
        Some(NetworkChoice {
            owner,
            vlan,
            created_at: Millis::from_be_bytes(rest.get(3..11)?.try_into().ok()?),
            first_address: u32::from_be_bytes(rest.get(11..15)?.try_into().ok()?),
            id: NetworkId::decode_key(rest.get(15..)?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_and_id_keys_round_trip() {
        let key = Pair(HostId("h".into()), 7u32);
        assert_eq!(Pair::<HostId, u32>::decode_key(&key.encode_key()), Some(key));
        let id = InstanceId::generate();
        assert_eq!(InstanceId::decode_key(&id.encode_key()), Some(id));
    }

    #[test]
    fn newest_first_keys_sort_newest_first_then_by_id() {
        let ids = [InstanceId::generate(), InstanceId::generate()];
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
        let project = ProjectId::generate();
        let in_project = Pair(project, expected[2]);
        assert_eq!(Pair::<ProjectId, NewestFirst>::decode_key(&in_project.encode_key()), Some(in_project));
    }

    #[test]
    fn network_choices_sort_by_owner_then_segment_age_and_range() {
        let choice = |owner, vlan, created_at, first_address| NetworkChoice {
            owner,
            vlan,
            created_at,
            first_address,
            id: NetworkId::generate(),
        };
        let (flat, vlan) = (NetworkOwner::Unbound(NetworkMode::Flat), NetworkOwner::Unbound(NetworkMode::Vlan));
        let project = NetworkOwner::Project(ProjectId::generate());
        let expected = [
            choice(flat, None, 5, 10),
            choice(flat, None, 5, 20),
            choice(flat, None, 6, 0),
            choice(vlan, Some(100), 0, 0),
            choice(vlan, Some(101), 0, 0),
            choice(project, Some(7), 9, 0),
        ];
        let mut keys: Vec<Vec<u8>> = expected.iter().rev().map(KeyCodec::encode_key).collect();
        keys.sort();
        let decoded: Vec<NetworkChoice> = keys.iter().map(|k| NetworkChoice::decode_key(k).unwrap()).collect();
        assert_eq!(decoded, expected);
        assert!(keys[5].starts_with(&project.prefix()) && !keys[4].starts_with(&project.prefix()));
    }
}
