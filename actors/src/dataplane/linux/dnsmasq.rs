//! One dnsmasq per bridge, as nova ran them: its command line, hosts file and lease script, and the lease
//! events the script reports.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nimbus_protocol::ids::NetworkId;
use nimbus_protocol::network::{LeaseAction, LeaseEvent};

use crate::dataplane::{DhcpHost, Segment};

/// How long a lease lasts; clients renew at half of it, so a lease the network manager missed is reported
/// again (`old`) within this time.
pub const LEASE_SECS: u32 = 600;

/// The files of one network's DHCP server.
#[derive(Clone, Debug)]
pub struct DhcpFiles {
    pub dir: PathBuf,
}

impl DhcpFiles {
    pub fn new(state_dir: &Path, network: NetworkId) -> DhcpFiles {
        DhcpFiles { dir: state_dir.join("dhcp").join(network.to_string()) }
    }
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }
    pub fn script(&self) -> PathBuf {
        self.dir.join("lease-script")
    }
    pub fn events(&self) -> PathBuf {
        self.dir.join("lease-events")
    }
}

/// dnsmasq's arguments for `segment`'s DHCP server: static leases from the hosts file, bound to the bridge
/// and the server address only, every lease change reported through the script. It serves DNS too: the
/// instances' names (`vm1`, `vm1.novalocal`, from their leases) itself, other names through the network's
/// `dns1` / `dns2` (never the host's resolv.conf); the instances are told it first, then `dns1` / `dns2`.
pub fn args(segment: &Segment, server: Ipv4Addr, files: &DhcpFiles) -> Vec<String> {
    let path = |p: PathBuf| p.display().to_string();
    let nameservers: Vec<String> =
        std::iter::once(server).chain(segment.dns_servers.iter().copied()).map(|a| a.to_string()).collect();
    let mut args = vec![
        "--keep-in-foreground".into(),
        "--strict-order".into(),
        "--bind-interfaces".into(),
        "--conf-file=".into(),
        format!("--pid-file={}", path(files.pid())),
        format!("--listen-address={server}"),
        format!("--interface={}", segment.bridge),
        "--except-interface=lo".into(),
        format!("--domain={}", segment.dhcp_domain),
        format!("--local=/{}/", segment.dhcp_domain),
        format!("--dhcp-option=6,{}", nameservers.join(",")),
        format!("--dhcp-range=set:nimbus,{},static,{},{}s", segment.cidr.network(), segment.cidr.mask(), LEASE_SECS),
        format!("--dhcp-lease-max={}", segment.cidr.size()),
        format!("--dhcp-option=3,{}", segment.gateway),
        format!("--dhcp-hostsfile={}", path(files.hosts())),
        format!("--dhcp-script={}", path(files.script())),
        "--leasefile-ro".into(),
        "--no-hosts".into(),
        "--no-resolv".into(),
    ];
    args.extend(segment.dns_servers.iter().map(|dns| format!("--server={dns}")));
    // Option 26 (interface MTU) is sent whether or not the client asked for it, as Neutron's dnsmasq does.
    args.extend(segment.mtu.map(|mtu| format!("--dhcp-option-force=26,{mtu}")));
    args
}

/// The hosts file: one `mac,hostname,ip` line per instance.
pub fn hosts_file(hosts: &BTreeSet<DhcpHost>) -> String {
    hosts.iter().map(|h| format!("{},{},{}\n", h.mac, h.hostname, h.address)).collect()
}

/// The lease script: dnsmasq runs it as `script add|old|del MAC IP [HOSTNAME]`; it appends the event to a
/// file the driver tails, so events survive a restart of nimbus and are never lost to a busy reader.
pub fn script(files: &DhcpFiles) -> String {
    format!("#!/bin/sh\necho \"$1 $2 $3\" >> '{}'\n", files.events().display())
}

/// Parses the lines the script appended.
pub fn parse_events(network: NetworkId, text: &str) -> Vec<LeaseEvent> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let action = match words.next()? {
                "add" => LeaseAction::Add,
                "old" => LeaseAction::Old,
                "del" => LeaseAction::Del,
                _ => return None,
            };
            let mac = words.next()?.to_ascii_lowercase();
            let address = words.next()?.parse().ok()?;
            Some(LeaseEvent { network, action, mac, address })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_serves_static_leases_and_names_on_the_bridge_only() {
        let network = NetworkId::generate();
        let segment = Segment {
            network,
            label: "private".into(),
            bridge: "br100".into(),
            bridge_interface: None,
            vlan: None,
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            dhcp: None,
            dns_servers: vec!["192.0.2.53".parse().unwrap()],
            mtu: Some(1400),
            dhcp_domain: "novalocal".into(),
        };
        let files = DhcpFiles::new(Path::new("/var/lib/nimbus/dataplane"), network);
        let args = args(&segment, "10.0.0.1".parse().unwrap(), &files);
        for expected in [
            "--listen-address=10.0.0.1",
            "--interface=br100",
            "--domain=novalocal",
            "--local=/novalocal/",
            "--dhcp-option=6,10.0.0.1,192.0.2.53",
            "--server=192.0.2.53",
            "--dhcp-range=set:nimbus,10.0.0.0,static,255.255.255.0,600s",
            "--dhcp-lease-max=256",
            "--dhcp-option-force=26,1400",
            "--leasefile-ro",
        ] {
            assert!(args.iter().any(|a| a == expected), "missing {expected} in {args:?}");
        }
        assert!(args.contains(&format!("--dhcp-hostsfile=/var/lib/nimbus/dataplane/dhcp/{network}/hosts")));
        assert!(!args.iter().any(|a| a.starts_with("--port")), "DNS on its standard port: {args:?}");
    }

    #[test]
    fn hosts_and_events_round_trip() {
        let network = NetworkId::generate();
        let hosts: BTreeSet<DhcpHost> = [DhcpHost {
            mac: "fa:16:3e:00:00:01".into(),
            hostname: "vm1".into(),
            address: "10.0.0.2".parse().unwrap(),
        }]
        .into();
        assert_eq!(hosts_file(&hosts), "fa:16:3e:00:00:01,vm1,10.0.0.2\n");
        let events = parse_events(
            network,
            "add FA:16:3E:00:00:01 10.0.0.2\nnonsense\nold fa:16:3e:00:00:01 10.0.0.2\ndel fa:16:3e:00:00:01 10.0.0.2\n",
        );
        let actions: Vec<LeaseAction> = events.iter().map(|e| e.action).collect();
        assert_eq!(actions, [LeaseAction::Add, LeaseAction::Old, LeaseAction::Del]);
        assert_eq!(events[0].mac, "fa:16:3e:00:00:01");
    }
}
