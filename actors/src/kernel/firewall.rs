//! Security groups as nftables: the `ip nimbus-firewall` table a filtering virt driver renders from its ports
//! and the host's [`HostFirewall`], replaced whole in one batch with the anti-spoofing table.
//!
//! The bridge family has no connection tracking on this kernel, so bridged frames are filtered where
//! br_netfilter hands them to the ip family's `forward` hook (routed traffic to and from floating addresses
//! passes there too). An instance port is known by its fixed address, which the anti-spoofing rules (earlier,
//! in the bridge family) make trustworthy. Two base chains: `egress` (priority 0) checks what a port sends
//! against its groups' egress rules, `ingress` (priority 10) what it is sent against their ingress rules; an
//! `accept` ends only its own base chain, so a packet between two ports here passes both checks.
//!
//! Stateful: replies of tracked connections pass (`ct direction reply`), so only the side that opens is
//! checked. Packets in the opening direction are checked every time, not only the first: when a rule goes,
//! the flows it let in stop, and flows the new rules still allow go on untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use nimbus_protocol::firewall::{FilterRule, Flow, HostFirewall, Peer, Protocol};
use nimbus_protocol::ids::SecurityGroupId;

use super::nft::PortFilter;

pub const FIREWALL_TABLE: (&str, &str) = ("ip", "nimbus-firewall");

fn group_name(group: &SecurityGroupId) -> String {
    format!("sg-{}", group.0.simple())
}

/// The match of one rule, seen from its group's chain for `flow`.
fn rule_match(rule: &FilterRule) -> String {
    let mut m = String::new();
    let peer_field = match rule.flow {
        Flow::Ingress => "saddr",
        Flow::Egress => "daddr",
    };
    match rule.peer {
        Peer::Any => {}
        Peer::Cidr(cidr) if cidr.prefix() == 0 => {}
        Peer::Cidr(cidr) => {
            let _ = write!(m, "ip {peer_field} {cidr} ");
        }
        Peer::Group(group) => {
            let _ = write!(m, "ip {peer_field} @{} ", group_name(&group));
        }
    }
    let range = |min: u16, max: Option<u16>| match max {
        Some(max) if max != min => format!("{min}-{max}"),
        _ => min.to_string(),
    };
    match (rule.protocol, rule.port_min) {
        (None, _) => {}
        (Some(p @ (Protocol::Tcp | Protocol::Udp)), Some(min)) => {
            let name = if p == Protocol::Tcp { "tcp" } else { "udp" };
            let _ = write!(m, "{name} dport {} ", range(min, rule.port_max));
        }
        (Some(Protocol::Icmp), Some(kind)) => {
            let _ = write!(m, "icmp type {kind} ");
            if let Some(code) = rule.port_max {
                let _ = write!(m, "icmp code {code} ");
            }
        }
        (Some(p), None) => {
            let name = match p {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Icmp => "icmp",
            };
            let _ = write!(m, "ip protocol {name} ");
        }
    }
    m
}

/// The `ip nimbus-firewall` table for `ports` under `firewall`, or `None` when no port is filtered.
pub fn firewall_body(ports: &[PortFilter], firewall: &HostFirewall) -> Option<String> {
    if ports.is_empty() {
        return None;
    }
    // One port per address (the maps' keys); the anti-spoofing rules make two ports with one address moot.
    let ports: BTreeMap<_, &PortFilter> = ports.iter().map(|p| (p.address, p)).collect();
    let mut b = String::new();
    for (group, members) in &firewall.members {
        let _ = write!(b, "  set {} {{ type ipv4_addr;", group_name(group));
        if !members.is_empty() {
            let members: Vec<String> = members.iter().map(|a| a.to_string()).collect();
            let _ = write!(b, " elements = {{ {} }};", members.join(", "));
        }
        let _ = writeln!(b, " }}");
    }
    for (map, side) in [("egress", "out"), ("ingress", "in")] {
        let entries: Vec<String> =
            ports.iter().map(|(address, p)| format!("{address} : jump {side}-{}", p.port)).collect();
        let _ = writeln!(b, "  map {map} {{ type ipv4_addr : verdict; elements = {{ {} }} }}", entries.join(", "));
    }
    for (chain, priority, field, map) in [("egress", 0, "saddr", "egress"), ("ingress", 10, "daddr", "ingress")] {
        let _ = writeln!(b, "  chain {chain} {{\n    type filter hook forward priority {priority}; policy accept;");
        let _ = writeln!(b, "    ct direction reply accept\n    ct state related accept");
        let _ = writeln!(b, "    ip {field} vmap @{map}\n  }}");
    }
    let mut used: BTreeSet<SecurityGroupId> = BTreeSet::new();
    for port in ports.values() {
        // Groups whose rules have not arrived add nothing: the port lets through only what is known.
        let groups: Vec<&SecurityGroupId> = firewall
            .instances
            .get(&port.instance)
            .map(|groups| groups.iter().filter(|g| firewall.groups.contains_key(g)).collect())
            .unwrap_or_default();
        used.extend(groups.iter().copied());
        let jumps =
            |flow: &str| -> String { groups.iter().map(|g| format!("    jump {}-{flow}\n", group_name(g))).collect() };
        // DHCP always: a port must get and renew its address whatever its groups say.
        let _ = writeln!(
            b,
            "  chain in-{} {{\n    ip saddr {} udp sport 67 udp dport 68 accept\n{}    drop\n  }}",
            port.port,
            port.dhcp_server,
            jumps("in")
        );
        let _ = writeln!(
            b,
            "  chain out-{} {{\n    udp sport 68 udp dport 67 accept\n{}    drop\n  }}",
            port.port,
            jumps("out")
        );
    }
    for group in used {
        for (flow, side) in [(Flow::Ingress, "in"), (Flow::Egress, "out")] {
            let _ = writeln!(b, "  chain {}-{side} {{", group_name(&group));
            for rule in firewall.groups[&group].iter().filter(|r| r.flow == flow) {
                let _ = writeln!(b, "    {}accept", rule_match(rule));
            }
            let _ = writeln!(b, "  }}");
        }
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_protocol::ids::InstanceId;

    fn port(n: u8, address: &str) -> PortFilter {
        PortFilter {
            port: format!("nv{n}"),
            instance: InstanceId(uuid::Uuid::from_bytes([n; 16])),
            mac: format!("fa:16:3e:00:00:0{n}"),
            address: address.parse().unwrap(),
            dhcp_server: "10.0.0.1".parse().unwrap(),
        }
    }

    fn rule(flow: Flow, protocol: Option<Protocol>, ports: (Option<u16>, Option<u16>), peer: Peer) -> FilterRule {
        FilterRule { flow, protocol, port_min: ports.0, port_max: ports.1, peer }
    }

    #[test]
    fn rules_render_as_matches_on_the_peer_and_the_protocol() {
        let group = SecurityGroupId(uuid::Uuid::from_bytes([7; 16]));
        let g = group_name(&group);
        for (rule, expected) in [
            (rule(Flow::Ingress, None, (None, None), Peer::Any), String::new()),
            (rule(Flow::Ingress, Some(Protocol::Tcp), (Some(80), Some(80)), Peer::Any), "tcp dport 80 ".into()),
            (
                rule(
                    Flow::Ingress,
                    Some(Protocol::Udp),
                    (Some(1000), Some(2000)),
                    Peer::Cidr("10.9.0.0/16".parse().unwrap()),
                ),
                "ip saddr 10.9.0.0/16 udp dport 1000-2000 ".into(),
            ),
            (
                rule(Flow::Ingress, Some(Protocol::Tcp), (None, None), Peer::Cidr("0.0.0.0/0".parse().unwrap())),
                "ip protocol tcp ".into(),
            ),
            (
                rule(Flow::Ingress, Some(Protocol::Icmp), (Some(8), Some(0)), Peer::Group(group)),
                format!("ip saddr @{g} icmp type 8 icmp code 0 "),
            ),
            (
                rule(Flow::Egress, Some(Protocol::Icmp), (None, None), Peer::Group(group)),
                format!("ip daddr @{g} ip protocol icmp "),
            ),
        ] {
            assert_eq!(rule_match(&rule), expected, "{rule:?}");
        }
    }

    #[test]
    fn each_port_jumps_to_its_groups_and_drops_the_rest() {
        let (a, b) = (port(1, "10.0.0.2"), port(2, "10.0.0.3"));
        let web = SecurityGroupId(uuid::Uuid::from_bytes([9; 16]));
        let mut firewall = HostFirewall::default();
        firewall.instances.insert(a.instance, vec![web]);
        firewall.groups.insert(
            web,
            vec![
                rule(Flow::Ingress, Some(Protocol::Tcp), (Some(80), Some(80)), Peer::Group(web)),
                rule(Flow::Egress, None, (None, None), Peer::Any),
            ],
        );
        firewall.members.insert(web, ["10.0.0.2".parse().unwrap()].into());
        let body = firewall_body(&[a, b], &firewall).unwrap();
        let w = group_name(&web);
        for line in [
            format!("set {w} {{ type ipv4_addr; elements = {{ 10.0.0.2 }}; }}"),
            "elements = { 10.0.0.2 : jump out-nv1, 10.0.0.3 : jump out-nv2 }".to_string(),
            "type filter hook forward priority 0; policy accept;".into(),
            "ct direction reply accept".into(),
            "ip daddr vmap @ingress".into(),
            format!(
                "chain in-nv1 {{\n    ip saddr 10.0.0.1 udp sport 67 udp dport 68 accept\n    jump {w}-in\n    drop\n  }}"
            ),
            // A port without rules yet takes and sends nothing but DHCP.
            "chain in-nv2 {\n    ip saddr 10.0.0.1 udp sport 67 udp dport 68 accept\n    drop\n  }".into(),
            "chain out-nv2 {\n    udp sport 68 udp dport 67 accept\n    drop\n  }".into(),
            format!("chain {w}-in {{\n    ip saddr @{w} tcp dport 80 accept\n  }}"),
            format!("chain {w}-out {{\n    accept\n  }}"),
        ] {
            assert!(body.contains(&line), "missing `{line}` in\n{body}");
        }
        assert_eq!(firewall_body(&[], &firewall), None);
    }
}
