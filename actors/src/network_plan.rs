//! Network planning: validating an operator's request and carving its range into networks, as
//! `nova-manage network create` did. Pure code, driven by tests.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use nimbus_protocol::ids::{NetworkId, ProjectId};
use nimbus_storage::records::{Millis, Network, NetworkMode, VpnEndpoint};
use serde::{Deserialize, Serialize};

/// The highest usable 802.1Q VLAN id.
pub const MAX_VLAN: u32 = 4094;
/// Addresses kept for VPN clients at the top of each VLAN network (nova's `cnt_vpn_clients`).
pub const VPN_CLIENTS: u32 = 4;

/// What the operator asks for. Defaults follow nova-network's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub label: String,
    pub mode: NetworkMode,
    pub fixed_range: Ipv4Network,
    pub num_networks: u32,
    pub network_size: u32,
    pub vlan_start: u32,
    pub vpn_start: u32,
    pub gateway: Option<Ipv4Addr>,
    pub bridge: Option<String>,
    pub bridge_interface: Option<String>,
    pub dns1: Option<Ipv4Addr>,
    pub dns2: Option<Ipv4Addr>,
    pub multi_host: bool,
    pub allowed_start: Option<Ipv4Addr>,
    pub allowed_end: Option<Ipv4Addr>,
    pub project: Option<ProjectId>,
    pub vpn_public_address: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
}

impl NetworkRequest {
    pub fn new(label: &str, mode: NetworkMode, fixed_range: Ipv4Network) -> NetworkRequest {
        NetworkRequest {
            label: label.to_string(),
            mode,
            fixed_range,
            num_networks: 1,
            network_size: fixed_range.size().min(256),
            vlan_start: 100,
            vpn_start: 1000,
            gateway: None,
            bridge: None,
            bridge_interface: None,
            dns1: None,
            dns2: None,
            multi_host: false,
            allowed_start: None,
            allowed_end: None,
            project: None,
            vpn_public_address: None,
            mtu: None,
        }
    }
}

/// Why a request cannot be carried out; the text is what the operator reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
}

fn invalid(message: String) -> PlanError {
    PlanError::Invalid(message)
}

/// The blocks that can never hold an instance's (or a floating) address: packets to them are never routed to
/// a host's interface.
const NEVER_INSTANCE_ADDRESSES: [(&str, &str); 5] = [
    ("0.0.0.0/8", "\"this network\""),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
];

/// Why `range` cannot be a network of instance addresses, if it cannot: it is not written as a network
/// (`10.0.0.5/24` for `10.0.0.0/24`), or it overlaps a block no instance address can come from.
pub fn network_address_problem(range: Ipv4Network) -> Option<String> {
    if range.ip() != range.network() {
        return Some(format!("{range} is not a network address; did you mean {}/{}?", range.network(), range.prefix()));
    }
    NEVER_INSTANCE_ADDRESSES.iter().find_map(|(block, what)| {
        let block: Ipv4Network = block.parse().expect("a valid CIDR");
        overlaps(block, range)
            .then(|| format!("{range} overlaps {block} ({what}), which can never hold instance addresses."))
    })
}

/// The networks a request makes, checked against the networks that exist.
pub fn plan(request: &NetworkRequest, existing: &[Network], now: Millis) -> Result<Vec<Network>, PlanError> {
    let r = request;
    if let Some(problem) =
        crate::names::name_problem("network", &r.label).or_else(|| network_address_problem(r.fixed_range))
    {
        return Err(invalid(problem));
    }
    if let Some(problem) = r.mtu.and_then(mtu_problem) {
        return Err(invalid(problem));
    }
    if r.num_networks == 0 {
        return Err(invalid("num_networks must be at least 1.".into()));
    }
    if !r.network_size.is_power_of_two() || r.network_size < 4 {
        return Err(invalid(format!("network_size must be a power of two of at least 4, not {}.", r.network_size)));
    }
    let wanted = u64::from(r.num_networks) * u64::from(r.network_size);
    if wanted > u64::from(r.fixed_range.size()) {
        return Err(invalid(format!(
            "The range {} holds {} addresses, too few for {} network(s) of {}.",
            r.fixed_range,
            r.fixed_range.size(),
            r.num_networks,
            r.network_size
        )));
    }
    if r.num_networks > 1 && r.gateway.is_some() {
        return Err(invalid("A gateway can be given only when creating one network.".into()));
    }
    let vlan = r.mode == NetworkMode::Vlan;
    if vlan && (r.vlan_start == 0 || r.vlan_start + r.num_networks - 1 > MAX_VLAN) {
        return Err(invalid(format!(
            "VLAN ids {}..{} are out of range; they must lie within 1..{MAX_VLAN}.",
            r.vlan_start,
            r.vlan_start + r.num_networks - 1
        )));
    }
    if vlan && r.bridge.is_some() && r.num_networks > 1 {
        return Err(invalid("VLAN networks get one bridge each (br-vlan<id>); do not name one for several.".into()));
    }

    let prefix = 32 - r.network_size.trailing_zeros() as u8;
    let base = u32::from(r.fixed_range.network());
    let mut planned = Vec::new();
    for i in 0..r.num_networks {
        let cidr = Ipv4Network::new(Ipv4Addr::from(base + i * r.network_size), prefix).expect("prefix is at most 30");
        let gateway = r.gateway.unwrap_or(Ipv4Addr::from(u32::from(cidr.network()) + 1));
        if !cidr.contains(gateway) || gateway == cidr.network() || gateway == cidr.broadcast() {
            return Err(invalid(format!("The gateway {gateway} is not a host address of {cidr}.")));
        }
        for bound in [r.allowed_start, r.allowed_end].into_iter().flatten() {
            if !cidr.contains(bound) {
                return Err(invalid(format!("{bound} is outside {cidr}.")));
            }
        }
        let vlan_id = vlan.then(|| r.vlan_start + i);
        let bridge = match (&r.bridge, vlan_id) {
            (Some(b), _) => b.clone(),
            (None, Some(v)) => format!("br-vlan{v}"),
            (None, None) => "br100".to_string(),
        };
        let label = if r.num_networks > 1 { format!("{}_{i}", r.label) } else { r.label.clone() };
        planned.push(Network {
            id: NetworkId::generate(),
            label,
            mode: r.mode,
            cidr,
            gateway,
            bridge,
            bridge_interface: r.bridge_interface.clone(),
            vlan: vlan_id.map(|v| v as u16),
            dhcp_server: r.mode.has_dhcp().then_some(gateway),
            vpn: vlan.then(|| VpnEndpoint {
                public_address: r.vpn_public_address,
                public_port: (r.vpn_start + i) as u16,
                private_address: Ipv4Addr::from(u32::from(cidr.network()) + 2),
            }),
            vpn_clients: if vlan { VPN_CLIENTS } else { 0 },
            dns1: r.dns1,
            dns2: r.dns2,
            multi_host: r.multi_host,
            allowed_start: r.allowed_start,
            allowed_end: r.allowed_end,
            project: r.project,
            created_at: now,
            subnet_name: String::new(),
            mtu: r.mtu,
        });
    }
    check_conflicts(&planned, existing)?;
    Ok(planned)
}

/// The MTUs a network may have: IPv4's minimum up to jumbo frames.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=9000;

/// Why `mtu` cannot be a network's, if it cannot.
pub fn mtu_problem(mtu: u32) -> Option<String> {
    (!MTU_RANGE.contains(&mtu))
        .then(|| format!("MTU {mtu} is out of range: a network's MTU is {} to {}.", MTU_RANGE.start(), MTU_RANGE.end()))
}

/// The lowest VLAN id from 100 on that no existing network has (a Network API network's segment).
pub fn free_vlan(existing: &[Network]) -> u32 {
    let taken: std::collections::BTreeSet<u32> = existing.iter().filter_map(|n| n.vlan).map(u32::from).collect();
    (100..=MAX_VLAN).find(|v| !taken.contains(v)).unwrap_or(MAX_VLAN + 1)
}

/// The lowest VPN port from 1000 on that no existing VLAN network's endpoint has.
pub fn free_vpn_port(existing: &[Network]) -> u32 {
    let taken: std::collections::BTreeSet<u32> =
        existing.iter().filter_map(|n| n.vpn.as_ref()).map(|v| u32::from(v.public_port)).collect();
    (1000..=u32::from(u16::MAX)).find(|p| !taken.contains(p)).unwrap_or(u32::from(u16::MAX))
}

/// Whether two ranges share an address.
pub fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

fn check_conflicts(planned: &[Network], existing: &[Network]) -> Result<(), PlanError> {
    for new in planned {
        for old in existing {
            if overlaps(new.cidr, old.cidr) {
                return Err(PlanError::Conflict(format!(
                    "The range {} overlaps network {} ({}).",
                    new.cidr, old.label, old.cidr
                )));
            }
            if new.vlan.is_some() && new.vlan == old.vlan {
                return Err(PlanError::Conflict(format!(
                    "VLAN {} is already used by network {}.",
                    new.vlan.unwrap_or_default(),
                    old.label
                )));
            }
            // Flat networks may share the operator's bridge; a VLAN network's bridge is its own.
            let shared_flat = new.mode != NetworkMode::Vlan && old.mode != NetworkMode::Vlan && new.mode == old.mode;
            if new.bridge == old.bridge && !shared_flat {
                return Err(PlanError::Conflict(format!(
                    "The bridge {} is already used by network {}.",
                    new.bridge, old.label
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(spec: &str) -> NetworkRequest {
        // "label mode cidr key=value…"
        let mut parts = spec.split_whitespace();
        let label = parts.next().unwrap();
        let mode = NetworkMode::from_name(parts.next().unwrap()).unwrap();
        let mut r = NetworkRequest::new(label, mode, parts.next().unwrap().parse().unwrap());
        for part in parts {
            let (k, v) = part.split_once('=').unwrap();
            match k {
                "n" => r.num_networks = v.parse().unwrap(),
                "size" => r.network_size = v.parse().unwrap(),
                "vlan" => r.vlan_start = v.parse().unwrap(),
                "gw" => r.gateway = Some(v.parse().unwrap()),
                "bridge" => r.bridge = Some(v.into()),
                "mtu" => r.mtu = Some(v.parse().unwrap()),
                other => panic!("unknown key {other}"),
            }
        }
        r
    }

    /// `check(existing, request, expected)`: expected lists "label cidr bridge vlan dhcp vpn" per network, or
    /// the error text.
    fn check(existing: &[&str], spec: &str, expected: &str) {
        let mut networks = Vec::new();
        for e in existing {
            networks.extend(plan(&request(e), &networks, 0).unwrap());
        }
        let got = match plan(&request(spec), &networks, 0) {
            Ok(planned) => planned
                .iter()
                .map(|n| {
                    format!(
                        "{} {} {} {} {} {}",
                        n.label,
                        n.cidr,
                        n.bridge,
                        n.vlan.map_or("-".into(), |v| v.to_string()),
                        n.dhcp_server.map_or("-".into(), |a| a.to_string()),
                        n.vpn.as_ref().map_or("-".into(), |v| format!("{}:{}", v.private_address, v.public_port)),
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected, "{spec}");
    }

    #[test]
    fn flat_networks_use_the_operator_bridge() {
        check(&[], "private flat 10.0.0.0/24", "private 10.0.0.0/24 br100 - - -");
        check(&[], "dhcp flat_dhcp 10.1.0.0/24 bridge=br101", "dhcp 10.1.0.0/24 br101 - 10.1.0.1 -");
    }

    #[test]
    fn vlan_ranges_are_carved_into_numbered_networks() {
        check(
            &[],
            "proj vlan 10.2.0.0/16 n=3 size=64 vlan=200",
            "proj_0 10.2.0.0/26 br-vlan200 200 10.2.0.1 10.2.0.2:1000\n\
             proj_1 10.2.0.64/26 br-vlan201 201 10.2.0.65 10.2.0.66:1001\n\
             proj_2 10.2.0.128/26 br-vlan202 202 10.2.0.129 10.2.0.130:1002",
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        check(&[], "x flat 10.0.0.5/24", "10.0.0.5/24 is not a network address; did you mean 10.0.0.0/24?");
        check(&[], "x flat 10.0.0.0/24 mtu=67", "MTU 67 is out of range: a network's MTU is 68 to 9000.");
        check(&[], "x flat 10.0.0.0/24 mtu=9001", "MTU 9001 is out of range: a network's MTU is 68 to 9000.");
        check(&[], "x flat 10.0.0.0/24 mtu=1400", "x 10.0.0.0/24 br100 - - -");
        check(
            &[],
            "x vlan 10.0.0.0/16 n=3 size=256 vlan=4093",
            "VLAN ids 4093..4095 are out of range; they must lie within 1..4094.",
        );
        check(
            &[],
            "x vlan 10.0.0.0/24 n=2 size=256",
            "The range 10.0.0.0/24 holds 256 addresses, too few for 2 network(s) of 256.",
        );
        check(&[], "x flat 10.0.0.0/24 size=100", "network_size must be a power of two of at least 4, not 100.");
        check(&[], "x flat 10.0.0.0/24 n=0", "num_networks must be at least 1.");
        check(&[], "x flat 10.0.0.0/24 gw=10.0.1.1", "The gateway 10.0.1.1 is not a host address of 10.0.0.0/24.");
    }

    #[test]
    fn ranges_that_can_never_hold_instance_addresses_are_refused() {
        for (spec, block) in [
            ("x flat 0.0.0.0/0", "0.0.0.0/8 (\"this network\")"),
            ("x flat 0.0.0.0/8", "0.0.0.0/8 (\"this network\")"),
            ("x flat 127.0.0.0/24", "127.0.0.0/8 (loopback)"),
            ("x flat 169.254.169.0/24", "169.254.0.0/16 (link-local)"),
            ("x flat 224.0.0.0/24", "224.0.0.0/4 (multicast)"),
            ("x flat 239.255.255.0/24", "224.0.0.0/4 (multicast)"),
            ("x flat 255.255.255.0/24", "240.0.0.0/4 (reserved)"),
            ("x vlan 96.0.0.0/3 n=2 size=256", "127.0.0.0/8 (loopback)"),
        ] {
            let range = spec.split(' ').nth(2).unwrap();
            check(&[], spec, &format!("{range} overlaps {block}, which can never hold instance addresses."));
        }
        check(&[], "x flat 126.255.255.0/24", "x 126.255.255.0/24 br100 - - -");
        check(&[], "x flat 128.0.0.0/24", "x 128.0.0.0/24 br100 - - -");
    }

    #[test]
    fn conflicts_with_existing_networks_are_refused() {
        check(
            &["a flat 10.0.0.0/24"],
            "b flat 10.0.0.128/25",
            "The range 10.0.0.128/25 overlaps network a (10.0.0.0/24).",
        );
        check(
            &["a vlan 10.1.0.0/24 vlan=100"],
            "b vlan 10.2.0.0/24 vlan=100",
            "VLAN 100 is already used by network a.",
        );
        check(
            &["a flat_dhcp 10.1.0.0/24 bridge=br5"],
            "b vlan 10.2.0.0/24 bridge=br5",
            "The bridge br5 is already used by network a.",
        );
        check(&["a flat 10.1.0.0/24"], "b flat 10.2.0.0/24", "b 10.2.0.0/24 br100 - - -");
        // VLAN bridges are named apart from the operator's flat bridge, so the defaults coexist.
        check(&["a flat 10.1.0.0/24"], "v vlan 10.3.0.0/24", "v 10.3.0.0/24 br-vlan100 100 10.3.0.1 10.3.0.2:1000");
    }
}
