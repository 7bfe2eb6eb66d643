//! Fixed-IP allocation and MAC generation: pure code, driven by tests.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use nimbus_storage::records::Network;
use rand::Rng;

/// Which addresses of a network instances may get. Never handed out: the network address, the gateway, the
/// broadcast address, the DHCP server's address, and in VLAN mode the VPN endpoint's private address and the
/// VPN client addresses at the top of the range; nor anything outside `allowed_start..=allowed_end` when
/// those are set. Every other address is free unless it is taken (allocated, still leased, or reserved by the
/// operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedIpAllocator {
    first: u32,
    last: u32,
    kept: [Option<u32>; 3],
}

impl FixedIpAllocator {
    pub fn for_network(network: &Network) -> FixedIpAllocator {
        let net = u32::from(network.cidr.network());
        let broadcast = u32::from(network.cidr.broadcast());
        let mut first = net + 1;
        // The VPN clients' addresses sit just below the broadcast address.
        let mut last = broadcast.saturating_sub(1).saturating_sub(network.vpn_clients);
        if let Some(start) = network.allowed_start {
            first = first.max(u32::from(start));
        }
        if let Some(end) = network.allowed_end {
            last = last.min(u32::from(end));
        }
        let kept = [
            Some(u32::from(network.gateway)),
            network.dhcp_server.map(u32::from),
            network.vpn.as_ref().map(|v| u32::from(v.private_address)),
        ];
        FixedIpAllocator { first, last, kept }
    }

    /// May an instance ever get `address` on this network?
    pub fn is_allocatable(&self, address: Ipv4Addr) -> bool {
        let a = u32::from(address);
        (self.first..=self.last).contains(&a) && !self.kept.contains(&Some(a))
    }

    /// The lowest free address at or after `from`; `taken` holds the addresses in use, as integers.
    pub fn first_free_from(&self, from: u32, taken: &BTreeSet<u32>) -> Option<Ipv4Addr> {
        (from.max(self.first)..=self.last)
            .find(|a| !self.kept.contains(&Some(*a)) && !taken.contains(a))
            .map(Ipv4Addr::from)
    }

    pub fn first_free(&self, taken: &BTreeSet<u32>) -> Option<Ipv4Addr> {
        self.first_free_from(self.first, taken)
    }

    /// How many addresses instances can get at most.
    pub fn capacity(&self) -> u32 {
        let span = (self.last + 1).saturating_sub(self.first);
        let kept = self.kept.iter().flatten().collect::<BTreeSet<_>>();
        span - kept.iter().filter(|a| (self.first..=self.last).contains(a)).count() as u32
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
    use nimbus_storage::ids::NetworkId;
    use nimbus_storage::records::{NetworkMode, VpnEndpoint};

    /// A network from a compact spec: "cidr gw=A dhcp=A vpn=A clients=N start=A end=A".
    fn network(spec: &str) -> Network {
        let mut parts = spec.split_whitespace();
        let cidr: ipnetwork::Ipv4Network = parts.next().unwrap().parse().unwrap();
        let mut n = Network {
            id: NetworkId::random(),
            label: "t".into(),
            mode: NetworkMode::Flat,
            cidr,
            gateway: Ipv4Addr::from(u32::from(cidr.network()) + 1),
            bridge: "br100".into(),
            bridge_interface: None,
            vlan: None,
            dhcp_server: None,
            vpn: None,
            vpn_clients: 0,
            dns1: None,
            dns2: None,
            multi_host: false,
            allowed_start: None,
            allowed_end: None,
            project: None,
            created_at: 0,
        };
        for part in parts {
            let (k, v) = part.split_once('=').unwrap();
            match k {
                "gw" => n.gateway = v.parse().unwrap(),
                "dhcp" => n.dhcp_server = Some(v.parse().unwrap()),
                "vpn" => {
                    n.vpn = Some(VpnEndpoint {
                        public_address: None,
                        public_port: 1000,
                        private_address: v.parse().unwrap(),
                    })
                }
                "clients" => n.vpn_clients = v.parse().unwrap(),
                "start" => n.allowed_start = Some(v.parse().unwrap()),
                "end" => n.allowed_end = Some(v.parse().unwrap()),
                other => panic!("unknown key {other}"),
            }
        }
        n
    }

    fn check(spec: &str, taken: &[&str], expected: Option<&str>) {
        let alloc = FixedIpAllocator::for_network(&network(spec));
        let taken: BTreeSet<u32> = taken.iter().map(|a| u32::from(a.parse::<Ipv4Addr>().unwrap())).collect();
        let got = alloc.first_free(&taken).map(|a| a.to_string());
        assert_eq!(got.as_deref(), expected, "{spec} taken {taken:?}");
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        check("10.0.0.0/24", &[], Some("10.0.0.2"));
        check("10.0.0.0/24 gw=10.0.0.254", &[], Some("10.0.0.1"));
        check("10.0.0.0/30", &[], Some("10.0.0.2"));
        check("10.0.0.0/30", &["10.0.0.2"], None);
    }

    #[test]
    fn keeps_dhcp_and_vpn_addresses_and_the_vpn_clients_range() {
        check("10.0.0.0/24 dhcp=10.0.0.2", &[], Some("10.0.0.3"));
        check("10.0.0.0/24 vpn=10.0.0.2", &[], Some("10.0.0.3"));
        // /29: .0 network, .1 gateway, .2 vpn, .7 broadcast, .5-.6 vpn clients: only .3 and .4 remain.
        check("10.0.0.0/29 vpn=10.0.0.2 clients=2", &["10.0.0.3"], Some("10.0.0.4"));
        check("10.0.0.0/29 vpn=10.0.0.2 clients=2", &["10.0.0.3", "10.0.0.4"], None);
    }

    #[test]
    fn honours_the_allowed_range() {
        check("10.0.0.0/24 start=10.0.0.100 end=10.0.0.101", &[], Some("10.0.0.100"));
        check("10.0.0.0/24 start=10.0.0.100 end=10.0.0.101", &["10.0.0.100", "10.0.0.101"], None);
    }

    #[test]
    fn fills_holes_lowest_first() {
        check("10.0.0.0/29", &["10.0.0.2", "10.0.0.4"], Some("10.0.0.3"));
        check("10.0.0.0/29", &["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"], None);
    }

    #[test]
    fn capacity_excludes_what_is_kept() {
        assert_eq!(FixedIpAllocator::for_network(&network("10.0.0.0/24")).capacity(), 253);
        assert_eq!(FixedIpAllocator::for_network(&network("10.0.0.0/24 dhcp=10.0.0.1")).capacity(), 253);
        assert_eq!(FixedIpAllocator::for_network(&network("10.0.0.0/29 vpn=10.0.0.2 clients=2")).capacity(), 2);
    }

    #[test]
    fn macs_have_the_openstack_prefix() {
        let mac = random_mac(&mut rand::rng());
        assert!(mac.starts_with("fa:16:3e:") && mac.len() == 17, "{mac}");
    }
}
