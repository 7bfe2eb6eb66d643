//! nimbus's nftables tables, rendered from the desired state and replaced as one atomic batch (`nft -f`):
//! a reader of the ruleset sees the old table or the new one, never a half-applied change, so re-applying on
//! a restart does not interrupt traffic.
//!
//! - `ip nimbus`: floating-IP DNAT / SNAT, the VPN forwards, SNAT of the fixed ranges for outbound traffic,
//!   and isolation between networks (owned by the `linux` dataplane).
//! - `bridge nimbus`: anti-spoofing per instance port (owned by the `netns` virt driver, as nova's compute
//!   firewall was), replaced in the same batch as the security groups' `ip nimbus-firewall`
//!   ([`super::firewall`]).

use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use nimbus_protocol::ids::InstanceId;

use super::{KernelError, process};

/// One instance port, as its filters see it. Anti-spoofing: it may send only from its MAC and IPv4 address,
/// ARP for that address, and DHCP requests. Its security groups are those of `instance`, and it always takes
/// DHCP answers from `dhcp_server` (its network's gateway, where the network side runs dnsmasq).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortFilter {
    pub port: String,
    pub instance: InstanceId,
    pub mac: String,
    pub address: Ipv4Addr,
    pub dhcp_server: Ipv4Addr,
}

/// One floating address: DNAT to `fixed`, and `fixed`'s outbound traffic SNATed to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FloatingRule {
    pub floating: Ipv4Addr,
    pub fixed: Ipv4Addr,
}

/// A project's VPN endpoint: UDP `public:port` to `private:1194`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VpnRule {
    pub public: Option<Ipv4Addr>,
    pub port: u16,
    pub private: Ipv4Addr,
}

/// The metadata service's address asked on `bridge`, sent to the listener at `to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MetadataRule {
    pub bridge: String,
    pub address: Ipv4Addr,
    pub to: std::net::SocketAddrV4,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatTable {
    pub floating: Vec<FloatingRule>,
    pub vpns: Vec<VpnRule>,
    pub fixed_ranges: Vec<Ipv4Network>,
    pub metadata: Vec<MetadataRule>,
}

pub const NAT_TABLE: (&str, &str) = ("ip", "nimbus");
pub const PORT_TABLE: (&str, &str) = ("bridge", "nimbus");

/// A batch that replaces table `family name` with `body` (or removes it when `body` is `None`). Declaring the
/// table first makes the delete valid when it does not exist yet.
pub fn replace_table((family, name): (&str, &str), body: Option<&str>) -> String {
    let mut batch = format!("table {family} {name} {{}}\ndelete table {family} {name}\n");
    if let Some(body) = body {
        let _ = writeln!(batch, "table {family} {name} {{\n{body}}}");
    }
    batch
}

/// The `ip nimbus` table, or `None` when there is nothing to translate or isolate.
pub fn nat_body(nat: &NatTable) -> Option<String> {
    if nat.floating.is_empty() && nat.vpns.is_empty() && nat.fixed_ranges.is_empty() && nat.metadata.is_empty() {
        return None;
    }
    let mut b = String::new();
    if !nat.fixed_ranges.is_empty() {
        let ranges: Vec<String> = nat.fixed_ranges.iter().map(|r| r.to_string()).collect();
        let _ = writeln!(b, "  set fixed {{ type ipv4_addr; flags interval; elements = {{ {} }} }}", ranges.join(", "));
    }
    // Every network's bridge (each has its metadata redirect). Outbound SNAT is for what an instance sends
    // to be routed, which arrives on its bridge; a frame bridged within a network (br_netfilter hands those
    // to these hooks too, for the security groups) has no input device at postrouting and is left alone.
    let bridges: std::collections::BTreeSet<&str> = nat.metadata.iter().map(|m| m.bridge.as_str()).collect();
    let routed = if bridges.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = bridges.iter().map(|b| format!("\"{b}\"")).collect();
        let _ = writeln!(b, "  set bridges {{ type ifname; elements = {{ {} }} }}", names.join(", "));
        "iifname @bridges ".to_string()
    };
    let mut dnat = String::new();
    for f in &nat.floating {
        let _ = writeln!(dnat, "    ip daddr {} dnat to {}", f.floating, f.fixed);
    }
    for v in &nat.vpns {
        let public = v.public.map(|p| format!("ip daddr {p} ")).unwrap_or_else(|| "fib daddr type local ".into());
        let _ = writeln!(dnat, "    {public}udp dport {} dnat to {}:1194", v.port, v.private);
    }
    let mut prerouting = dnat.clone();
    for m in &nat.metadata {
        let _ =
            writeln!(prerouting, "    iifname \"{}\" ip daddr {} tcp dport 80 dnat to {}", m.bridge, m.address, m.to);
    }
    let _ = writeln!(
        b,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{prerouting}  }}"
    );
    let _ = writeln!(b, "  chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}");
    let _ = writeln!(b, "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;");
    if !nat.fixed_ranges.is_empty() {
        for f in &nat.floating {
            let _ = writeln!(b, "    {routed}ip saddr {} ip daddr != @fixed snat to {}", f.fixed, f.floating);
        }
        let _ = writeln!(b, "    {routed}ip saddr @fixed ip daddr != @fixed masquerade");
        // Hairpin: an instance reaching a floating address of its own network must see the answer come back
        // through the router, not straight from the neighbour.
        for range in &nat.fixed_ranges {
            let _ = writeln!(b, "    ip saddr {range} ip daddr {range} ct status dnat masquerade");
        }
    }
    let _ = writeln!(b, "  }}");
    // Networks are isolated from each other at the router. What a floating address or VPN forward lets in
    // passes only while its mapping exists: a connection tracked under an old mapping is cut when the
    // address is disassociated.
    let _ = writeln!(b, "  chain forward {{\n    type filter hook forward priority filter; policy accept;");
    if !nat.floating.is_empty() {
        let pairs: Vec<String> = nat.floating.iter().map(|f| format!("{} . {}", f.floating, f.fixed)).collect();
        let _ = writeln!(
            b,
            "    ct status dnat ct original ip daddr . ct reply ip saddr {{ {} }} accept",
            pairs.join(", ")
        );
    }
    if !nat.vpns.is_empty() {
        let privates: Vec<String> = nat.vpns.iter().map(|v| v.private.to_string()).collect();
        let _ = writeln!(b, "    ct status dnat ip daddr {{ {} }} udp dport 1194 accept", privates.join(", "));
    }
    if !nat.fixed_ranges.is_empty() {
        let _ = writeln!(b, "    ct status dnat ip daddr @fixed drop");
        let _ = writeln!(b, "    ct state established,related accept");
        for range in &nat.fixed_ranges {
            let _ = writeln!(b, "    ip saddr {range} ip daddr != {range} ip daddr @fixed drop");
        }
    }
    let _ = writeln!(b, "  }}");
    Some(b)
}

/// The `bridge nimbus` table, or `None` when no port is filtered.
pub fn port_body(ports: &[PortFilter]) -> Option<String> {
    if ports.is_empty() {
        return None;
    }
    let mut b = String::new();
    let entries: Vec<String> = ports.iter().map(|p| format!("\"{}\" : jump port-{}", p.port, p.port)).collect();
    let _ = writeln!(b, "  map ports {{ type ifname : verdict; elements = {{ {} }} }}", entries.join(", "));
    // Every frame an instance sends, whether bridged to a neighbour or routed by the host.
    let _ = writeln!(b, "  chain prerouting {{\n    type filter hook prerouting priority filter; policy accept;");
    let _ = writeln!(b, "    iifname vmap @ports\n  }}");
    for p in ports {
        let _ = writeln!(b, "  chain port-{} {{", p.port);
        let _ = writeln!(b, "    ether saddr != {} drop", p.mac);
        let _ = writeln!(b, "    arp saddr ether != {} drop", p.mac);
        let _ = writeln!(b, "    arp saddr ip != {} drop", p.address);
        let _ = writeln!(b, "    ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept");
        let _ = writeln!(b, "    ether type ip ip saddr != {} drop", p.address);
        let _ = writeln!(b, "    ether type ip6 drop\n  }}");
    }
    Some(b)
}

/// Applies `batch` in the namespace `netns` as one transaction.
pub async fn apply(netns: Option<&str>, batch: &str) -> Result<(), KernelError> {
    process::run(process::command_in(netns, "nft", &["-f", "-"]), Some(batch)).await.map(|_| ())
}

/// The table as the kernel has it (empty when it does not exist), for the drivers' tests.
#[cfg(test)]
pub async fn list(netns: Option<&str>, (family, name): (&str, &str)) -> Result<String, KernelError> {
    match process::run(process::command_in(netns, "nft", &["list", "table", family, name]), None).await {
        Ok(out) => Ok(out),
        Err(KernelError::Command { detail, .. }) if detail.contains("No such file or directory") => Ok(String::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_state_removes_the_tables() {
        assert_eq!(nat_body(&NatTable::default()), None);
        assert_eq!(port_body(&[]), None);
        assert_eq!(replace_table(NAT_TABLE, None), "table ip nimbus {}\ndelete table ip nimbus\n");
    }

    #[test]
    fn floating_addresses_are_translated_both_ways_and_networks_isolated() {
        let nat = NatTable {
            floating: vec![FloatingRule {
                floating: "203.0.113.20".parse().unwrap(),
                fixed: "10.0.0.2".parse().unwrap(),
            }],
            vpns: vec![VpnRule { public: None, port: 1000, private: "10.1.0.2".parse().unwrap() }],
            fixed_ranges: vec!["10.0.0.0/24".parse().unwrap(), "10.1.0.0/24".parse().unwrap()],
            metadata: vec![MetadataRule {
                bridge: "br100".into(),
                address: "169.254.169.254".parse().unwrap(),
                to: "10.0.0.1:8775".parse().unwrap(),
            }],
        };
        let body = nat_body(&nat).unwrap();
        for line in [
            "elements = { 10.0.0.0/24, 10.1.0.0/24 }",
            "ip daddr 203.0.113.20 dnat to 10.0.0.2",
            "set bridges { type ifname; elements = { \"br100\" } }",
            "iifname @bridges ip saddr 10.0.0.2 ip daddr != @fixed snat to 203.0.113.20",
            "fib daddr type local udp dport 1000 dnat to 10.1.0.2:1194",
            "iifname @bridges ip saddr @fixed ip daddr != @fixed masquerade",
            "ip saddr 10.0.0.0/24 ip daddr != 10.0.0.0/24 ip daddr @fixed drop",
            "ct status dnat ct original ip daddr . ct reply ip saddr { 203.0.113.20 . 10.0.0.2 } accept",
            "ct status dnat ip daddr @fixed drop",
            "ip saddr 10.0.0.0/24 ip daddr 10.0.0.0/24 ct status dnat masquerade",
            "iifname \"br100\" ip daddr 169.254.169.254 tcp dport 80 dnat to 10.0.0.1:8775",
        ] {
            assert!(body.contains(line), "missing `{line}` in\n{body}");
        }
        // DNAT for both routed and locally generated traffic.
        assert_eq!(body.matches("ip daddr 203.0.113.20 dnat to 10.0.0.2").count(), 2);
    }

    #[test]
    fn each_port_may_only_use_its_own_addresses() {
        let ports = [PortFilter {
            port: "nv0123".into(),
            instance: InstanceId(uuid::Uuid::from_bytes([1; 16])),
            mac: "fa:16:3e:00:00:01".into(),
            address: "10.0.0.2".parse().unwrap(),
            dhcp_server: "10.0.0.1".parse().unwrap(),
        }];
        let body = port_body(&ports).unwrap();
        for line in [
            "\"nv0123\" : jump port-nv0123",
            "ether saddr != fa:16:3e:00:00:01 drop",
            "arp saddr ip != 10.0.0.2 drop",
            "ether type ip ip saddr != 10.0.0.2 drop",
        ] {
            assert!(body.contains(line), "missing `{line}` in\n{body}");
        }
    }
}
