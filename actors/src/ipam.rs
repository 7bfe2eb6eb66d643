//! Fixed-IP and MAC allocation and the DHCP lease rules: pure code, driven by tests.

use std::net::Ipv4Addr;

use nimbus_protocol::network::{LeaseAction, LeaseEvent};
use nimbus_storage::records::{FixedIp, Network};
use rand::Rng;

/// Which addresses of a network instances may get. Never handed out: the network address, the gateway, the
/// broadcast address, the DHCP server's address, and in VLAN mode the VPN endpoint's private address and the
/// VPN client addresses at the top of the range; nor anything outside `allowed_start..=allowed_end` when
/// those are set. Every other address is free unless it is taken (allocated, still leased, or reserved by the
/// operator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedIpAllocator {
    range: NumberRange,
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
        FixedIpAllocator { range: NumberRange { first, last, kept } }
    }

    /// May an instance ever get `address` on this network?
    pub fn is_allocatable(&self, address: Ipv4Addr) -> bool {
        self.range.allocatable(u32::from(address))
    }

    /// The lowest free address at or after `from`, wrapping around once; `taken_from(a)` returns the taken
    /// addresses at or after `a` in ascending order, a batch at a time (an empty or short batch means there are
    /// no more). Reads only as many taken addresses as it skips.
    pub fn find_free<E>(
        &self,
        from: u32,
        taken_from: impl FnMut(u32) -> Result<Vec<u32>, E>,
    ) -> Result<Option<Ipv4Addr>, E> {
        Ok(self.range.find_free(from, taken_from)?.map(Ipv4Addr::from))
    }

    /// The plain scan: the lowest free address at or after `from`, `taken` holding the addresses in use. The
    /// oracle the cursor search is tested against.
    #[cfg(test)]
    fn first_free_from(&self, from: u32, taken: &std::collections::BTreeSet<u32>) -> Option<Ipv4Addr> {
        let range = &self.range;
        (from.max(range.first)..=range.last)
            .find(|a| !range.kept.contains(&Some(*a)) && !taken.contains(a))
            .map(Ipv4Addr::from)
    }

    #[cfg(test)]
    fn first_free(&self, taken: &std::collections::BTreeSet<u32>) -> Option<Ipv4Addr> {
        self.first_free_from(self.range.first, taken)
    }

    /// How many addresses instances can get at most.
    #[cfg(test)]
    fn capacity(&self) -> u32 {
        let range = &self.range;
        let span = (range.last + 1).saturating_sub(range.first);
        let kept = range.kept.iter().flatten().collect::<std::collections::BTreeSet<_>>();
        span - kept.iter().filter(|a| (range.first..=range.last).contains(a)).count() as u32
    }
}

/// The MACs instances get: OpenStack's prefix `fa:16:3e` and a 24-bit number, handed out in order from a
/// cursor that only moves forward (wrapping at the top). A freed MAC is thus the last to be given again, long
/// after ARP caches and DHCP leases naming it are gone, and the MACs of one batch of allocations sit side by
/// side in the store (one page written, not one page each as random MACs cost). A new cloud's cursor starts
/// at a random number, so two clouds on one L2 segment do not hand out the same MACs.
pub struct MacAllocator;

impl MacAllocator {
    /// What every MAC nimbus hands out starts with.
    pub const PREFIX: &'static str = "fa:16:3e:";
    const RANGE: NumberRange = NumberRange { first: 0, last: 0xff_ffff, kept: [None; 3] };

    /// Where a new cloud's cursor starts.
    pub fn random_start(rng: &mut impl Rng) -> u32 {
        rng.random_range(Self::RANGE.first..=Self::RANGE.last)
    }

    /// The first free MAC number at or after `from`, wrapping around once; `taken_from` as for
    /// [`FixedIpAllocator::find_free`].
    pub fn find_free<E>(from: u32, taken_from: impl FnMut(u32) -> Result<Vec<u32>, E>) -> Result<Option<u32>, E> {
        Self::RANGE.find_free(from, taken_from)
    }

    /// The MAC with number `n` (of its lower 24 bits).
    pub fn mac(n: u32) -> String {
        let [_, a, b, c] = n.to_be_bytes();
        format!("{}{a:02x}:{b:02x}:{c:02x}", Self::PREFIX)
    }

    /// The number of a MAC nimbus handed out; `None` for any other.
    pub fn number(mac: &str) -> Option<u32> {
        let rest = mac.strip_prefix(Self::PREFIX)?;
        let mut n = 0u32;
        for (i, part) in rest.split(':').enumerate() {
            if i > 2 || part.len() != 2 {
                return None;
            }
            n = n << 8 | u32::from(u8::from_str_radix(part, 16).ok()?);
        }
        (rest.len() == 8).then_some(n)
    }
}

/// Numbers `first..=last` but the `kept` ones, handed out lowest free first from a cursor: the search behind
/// both allocators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NumberRange {
    first: u32,
    last: u32,
    kept: [Option<u32>; 3],
}

impl NumberRange {
    fn allocatable(&self, a: u32) -> bool {
        (self.first..=self.last).contains(&a) && !self.kept.contains(&Some(a))
    }

    /// The lowest allocatable number at or after `a`, if any.
    fn next_allocatable(&self, mut a: u32) -> Option<u32> {
        a = a.max(self.first);
        while a <= self.last {
            if self.allocatable(a) {
                return Some(a);
            }
            a += 1;
        }
        None
    }

    fn find_free<E>(
        &self,
        from: u32,
        mut taken_from: impl FnMut(u32) -> Result<Vec<u32>, E>,
    ) -> Result<Option<u32>, E> {
        let from = if (self.first..=self.last).contains(&from) { from } else { self.first };
        'ranges: for (start, end) in [(from, self.last), (self.first, from.saturating_sub(1))] {
            let Some(mut next) = self.next_allocatable(start).filter(|a| *a <= end) else { continue };
            loop {
                let batch = taken_from(next)?;
                let mut advanced = false;
                for taken in batch {
                    if taken < next {
                        continue;
                    }
                    if taken > next {
                        return Ok(Some(next));
                    }
                    match self.next_allocatable(next + 1).filter(|a| *a <= end) {
                        Some(a) => next = a,
                        None => continue 'ranges,
                    }
                    advanced = true;
                }
                if !advanced {
                    // Nothing taken at or after `next`.
                    return Ok(Some(next));
                }
            }
        }
        Ok(None)
    }
}

/// What a lease event does to the address's row.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseChange {
    Leased(bool),
    /// The lease of a deallocated address ended: the address is free.
    Free,
}

/// The change `event` makes to `row`, if any: none for an address handed to another MAC since, or a state
/// the row is in already (a DHCP server reports every lease again, `old`, on each reload and renewal).
pub fn lease_change(row: &FixedIp, event: &LeaseEvent) -> Option<LeaseChange> {
    if row.mac.as_deref() != Some(event.mac.as_str()) {
        return None;
    }
    match event.action {
        LeaseAction::Add | LeaseAction::Old => (!row.leased).then_some(LeaseChange::Leased(true)),
        LeaseAction::Del if !row.allocated && !row.reserved => Some(LeaseChange::Free),
        LeaseAction::Del => row.leased.then_some(LeaseChange::Leased(false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_protocol::ids::NetworkId;
    use nimbus_storage::records::{NetworkMode, VpnEndpoint};
    use std::collections::BTreeSet;

    /// A network from a compact spec: "cidr gw=A dhcp=A vpn=A clients=N start=A end=A".
    fn network(spec: &str) -> Network {
        let mut parts = spec.split_whitespace();
        let cidr: ipnetwork::Ipv4Network = parts.next().unwrap().parse().unwrap();
        let mut n = Network {
            id: NetworkId::generate(),
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
            subnet_name: String::new(),
            mtu: None,
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

    /// `find_free` must agree with the plain scan, from any cursor, with batches of any size.
    #[test]
    fn cursor_search_agrees_with_the_plain_scan() {
        let alloc = FixedIpAllocator::for_network(&network("10.0.0.0/28 dhcp=10.0.0.2 clients=2"));
        let all: Vec<u32> = (0..16).map(|i| u32::from(Ipv4Addr::new(10, 0, 0, i))).collect();
        for mask in 0u32..(1 << 12) {
            let taken: BTreeSet<u32> = all.iter().copied().filter(|a| mask & (1 << ((a & 0xf) % 12)) != 0).collect();
            for cursor in [all[0], all[3], all[7], all[12], all[15]] {
                for batch in [1usize, 3, 64] {
                    let got = alloc
                        .find_free(cursor, |a| Ok::<_, ()>(taken.range(a..).take(batch).copied().collect()))
                        .unwrap();
                    let expected = alloc.first_free_from(cursor, &taken).or_else(|| alloc.first_free(&taken));
                    assert_eq!(got, expected, "taken {taken:?} cursor {cursor} batch {batch}");
                }
            }
        }
    }

    #[test]
    fn capacity_excludes_what_is_kept() {
        assert_eq!(FixedIpAllocator::for_network(&network("10.0.0.0/24")).capacity(), 253);
        assert_eq!(FixedIpAllocator::for_network(&network("10.0.0.0/24 dhcp=10.0.0.1")).capacity(), 253);
        assert_eq!(FixedIpAllocator::for_network(&network("10.0.0.0/29 vpn=10.0.0.2 clients=2")).capacity(), 2);
    }

    #[test]
    fn macs_have_the_openstack_prefix_and_round_trip_through_their_number() {
        for (n, mac) in [(0, "fa:16:3e:00:00:00"), (0x0a0b0c, "fa:16:3e:0a:0b:0c"), (0xff_ffff, "fa:16:3e:ff:ff:ff")] {
            assert_eq!(MacAllocator::mac(n), mac);
            assert_eq!(MacAllocator::number(mac), Some(n));
        }
        for other in
            ["02:16:3e:00:00:01", "fa:16:3e:00:00", "fa:16:3e:00:00:01:02", "fa:16:3e:0g:00:01", "fa:16:3e:000:0:01"]
        {
            assert_eq!(MacAllocator::number(other), None, "{other}");
        }
        let start = MacAllocator::random_start(&mut rand::rng());
        assert_eq!(MacAllocator::number(&MacAllocator::mac(start)), Some(start));
    }

    #[test]
    fn macs_are_handed_out_in_order_and_wrap_at_the_top() {
        let taken =
            |set: &'static [u32]| move |from: u32| Ok::<_, ()>(set.iter().copied().filter(|n| *n >= from).collect());
        assert_eq!(MacAllocator::find_free(5, taken(&[])), Ok(Some(5)));
        assert_eq!(MacAllocator::find_free(5, taken(&[5, 6, 8])), Ok(Some(7)));
        assert_eq!(MacAllocator::find_free(0xff_fffe, taken(&[0, 0xff_fffe, 0xff_ffff])), Ok(Some(1)));
        // A cursor past the top (the number after the last MAC) starts again at the bottom.
        assert_eq!(MacAllocator::find_free(0x100_0000, taken(&[0])), Ok(Some(1)));
    }

    #[test]
    fn lease_events_change_only_what_they_must() {
        let mac = "fa:16:3e:00:00:01";
        // (allocated, leased, action, event from the row's MAC, expected change)
        let cases = [
            (true, false, LeaseAction::Add, true, Some(LeaseChange::Leased(true))),
            (true, true, LeaseAction::Add, true, None),
            (true, true, LeaseAction::Old, true, None),
            (true, false, LeaseAction::Old, true, Some(LeaseChange::Leased(true))),
            (true, true, LeaseAction::Del, true, Some(LeaseChange::Leased(false))),
            (true, false, LeaseAction::Del, true, None),
            (false, true, LeaseAction::Del, true, Some(LeaseChange::Free)),
            (true, false, LeaseAction::Add, false, None),
            (false, true, LeaseAction::Del, false, None),
        ];
        for (allocated, leased, action, same_mac, expected) in cases {
            let row = FixedIp {
                address: "10.0.0.2".parse().unwrap(),
                instance: None,
                mac: Some(mac.into()),
                hostname: None,
                allocated,
                leased,
                reserved: false,
                released_at: None,
            };
            let event = LeaseEvent {
                network: NetworkId::generate(),
                action,
                mac: if same_mac { mac.into() } else { "fa:16:3e:00:00:02".into() },
                address: row.address,
            };
            assert_eq!(lease_change(&row, &event), expected, "{allocated} {leased} {action:?} {same_mac}");
        }
    }
}
