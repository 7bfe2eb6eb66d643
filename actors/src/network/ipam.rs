//! Fixed-IP allocation and MAC generation: pure code, driven by tests.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use rand::Rng;

/// Which addresses of a subnet instances may get. The network address, the gateway and the broadcast address
/// are never handed out; every other address is free unless it is taken (allocated or reserved by the
/// operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedIpAllocator {
    pub cidr: Ipv4Network,
    pub gateway: Ipv4Addr,
}

impl FixedIpAllocator {
    pub fn is_reserved(&self, address: Ipv4Addr) -> bool {
        address == self.cidr.network() || address == self.gateway || address == self.cidr.broadcast()
    }

    /// The lowest free address; `taken` holds the addresses in use, as integers.
    pub fn first_free(&self, taken: &BTreeSet<u32>) -> Option<Ipv4Addr> {
        let first = u32::from(self.cidr.network());
        let last = u32::from(self.cidr.broadcast());
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|a| !self.is_reserved(*a) && !taken.contains(&u32::from(*a)))
    }

    /// How many addresses instances can get at most.
    pub fn capacity(&self) -> u32 {
        let all = u32::from(self.cidr.broadcast()) - u32::from(self.cidr.network()) + 1;
        let reserved = [self.cidr.network(), self.gateway, self.cidr.broadcast()]
            .into_iter()
            .filter(|a| self.cidr.contains(*a))
            .collect::<BTreeSet<_>>()
            .len() as u32;
        all.saturating_sub(reserved)
    }
}

/// A random MAC with OpenStack's prefix `fa:16:3e`.
pub fn random_mac(rng: &mut impl Rng) -> String {
    let b: [u8; 3] = rng.random();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cidr: &str, gateway: &str, taken: &[&str], expected: Option<&str>) {
        let alloc = FixedIpAllocator {
            cidr: cidr.parse().unwrap(),
            gateway: gateway.parse().unwrap(),
        };
        let taken: BTreeSet<u32> = taken
            .iter()
            .map(|a| u32::from(a.parse::<Ipv4Addr>().unwrap()))
            .collect();
        let got = alloc.first_free(&taken).map(|a| a.to_string());
        assert_eq!(got.as_deref(), expected, "{cidr} taken {taken:?}");
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        check("10.0.0.0/24", "10.0.0.1", &[], Some("10.0.0.2"));
        check("10.0.0.0/24", "10.0.0.254", &[], Some("10.0.0.1"));
        check("10.0.0.0/30", "10.0.0.1", &[], Some("10.0.0.2"));
        check("10.0.0.0/30", "10.0.0.1", &["10.0.0.2"], None);
    }

    #[test]
    fn fills_holes_lowest_first() {
        check("10.0.0.0/29", "10.0.0.1", &["10.0.0.2", "10.0.0.4"], Some("10.0.0.3"));
        check(
            "10.0.0.0/29",
            "10.0.0.1",
            &["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"],
            None,
        );
    }

    #[test]
    fn capacity_excludes_reserved() {
        let a = FixedIpAllocator {
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
        };
        assert_eq!(a.capacity(), 253);
    }

    #[test]
    fn macs_have_the_openstack_prefix() {
        let mac = random_mac(&mut rand::rng());
        assert!(mac.starts_with("fa:16:3e:") && mac.len() == 17, "{mac}");
    }
}
