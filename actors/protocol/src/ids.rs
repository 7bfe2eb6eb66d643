//! Typed identifiers: one newtype per kind of thing, never bare strings or integers. The store keys its
//! tables by them and messages carry them; neither owns them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The name of the kind, for errors and record kinds.
            pub const KIND: &'static str = $kind;

            /// A new identifier: a UUIDv7, ordered by creation time, so that a table keyed by it takes new
            /// rows at its right edge (a batch of new and recently made records shares pages instead of
            /// dirtying one page each); its 74 random bits keep it unguessable.
            pub fn generate() -> Self {
                $name(Uuid::now_v7())
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
uuid_id!(SecurityGroupId, "security_group");
uuid_id!(SecurityRuleId, "security_group_rule");

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_the_same() {
        let id = InstanceId::generate();
        assert_eq!(id.to_string().parse::<InstanceId>().unwrap(), id);
        assert_eq!(format!("{:?}", NetworkId(Uuid::nil())), "network:00000000-0000-0000-0000-000000000000");
    }
}
