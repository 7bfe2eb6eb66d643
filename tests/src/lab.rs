//! A network lab for the real dataplane: a "network host" namespace (where the cloud's bridges, NAT and
//! dnsmasq live) wired to a "public" namespace that plays the outside world, plus helpers to look at and
//! talk to instances. Everything whose name starts with the lab's prefix (namespaces and the processes in
//! them) is removed when the lab is dropped, also when the test fails.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

use ipnetwork::Ipv4Network;
use nimbus_actors::cloud::{DataplaneKind, Drivers, VirtKind};
use nimbus_actors::kernel::{self, process};

use crate::Options;

/// The network host's address on the public side; the public namespace is `.2`.
pub const HOST_PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The floating pool of a lab cloud: inside the public /24, away from the two addresses above.
pub const FLOATING_RANGE: &str = "198.51.100.16/28";
/// The network host's public interface (the default pool's interface).
pub const PUBLIC_INTERFACE: &str = "eth0";

pub struct Lab {
    pub prefix: String,
    /// The network host's namespace.
    pub host: String,
    /// The outside world's namespace.
    pub public: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Lab {
    /// A new lab named `name`, or `None` when this machine cannot run one (`kernel::skip_unless_ci`): the
    /// real dataplane needs root and iproute2, nftables, dnsmasq and busybox.
    pub fn new(name: &str) -> Option<Lab> {
        if let Err(why) = kernel::check_prerequisites(&["ip", "nft", "dnsmasq", "busybox"]) {
            kernel::skip_unless_ci(&format!("lab {name}"), &why.to_string());
            return None;
        }
        let prefix = format!("nlab-{name}-");
        remove_all(&prefix);
        let lab = Lab { host: format!("{prefix}host"), public: format!("{prefix}pub"), prefix };
        lab.build().expect("the lab's namespaces are created");
        Some(lab)
    }

    fn build(&self) -> Result<(), String> {
        let (host, public) = (self.host.as_str(), self.public.as_str());
        for ns in [host, public] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["link", "add", PUBLIC_INTERFACE, "netns", host, "type", "veth", "peer", "name", "eth0", "netns", public])?;
        ip(&["-n", host, "addr", "add", &format!("{HOST_PUBLIC}/24"), "dev", PUBLIC_INTERFACE])?;
        ip(&["-n", public, "addr", "add", &format!("{OUTSIDE}/24"), "dev", "eth0"])?;
        ip(&["-n", host, "link", "set", PUBLIC_INTERFACE, "up"])?;
        ip(&["-n", public, "link", "set", "eth0", "up"])
    }

    /// More hosts (namespaces `<prefix><name>`) and an underlay between them and the network host: a switch
    /// namespace with a bridge, and on every host a link `ul0` at `192.0.2.<n>/24` (the network host is .1).
    /// VXLAN segments run over it, as over a real data-centre network.
    pub fn with_underlay(&self, hosts: &[&str]) -> Vec<String> {
        let switch = format!("{}switch", self.prefix);
        let step = || -> Result<Vec<String>, String> {
            ip(&["netns", "add", &switch])?;
            ip(&["-n", &switch, "link", "add", "sw", "type", "bridge", "mcast_snooping", "0"])?;
            ip(&["-n", &switch, "link", "set", "sw", "up"])?;
            let mut names = Vec::new();
            for (n, host) in std::iter::once(self.host.clone())
                .chain(hosts.iter().map(|h| format!("{}{h}", self.prefix)))
                .enumerate()
            {
                if n > 0 {
                    ip(&["netns", "add", &host])?;
                    ip(&["-n", &host, "link", "set", "lo", "up"])?;
                    names.push(host.clone());
                }
                let port = format!("p{n}");
                ip(&["link", "add", "ul0", "netns", &host, "type", "veth", "peer", "name", &port, "netns", &switch])?;
                ip(&["-n", &switch, "link", "set", &port, "master", "sw", "up"])?;
                ip(&["-n", &host, "addr", "add", &format!("192.0.2.{}/24", n + 1), "dev", "ul0"])?;
                ip(&["-n", &host, "link", "set", "ul0", "up"])?;
            }
            Ok(names)
        };
        step().expect("the underlay is built")
    }

    /// Instance namespaces of a lab cloud start with this.
    pub fn instance_prefix(&self) -> String {
        format!("{}i-", self.prefix)
    }

    /// Test-cloud options for a real single-host cloud in this lab: the linux dataplane in the host
    /// namespace, netns instances running httpd, the default pool on the public side.
    pub fn options(&self) -> Options {
        Options {
            hosts: 1,
            drivers: Drivers {
                dataplane: DataplaneKind::Linux,
                virt: VirtKind::Netns,
                host_netns: Some(self.host.clone()),
                instance_prefix: self.instance_prefix(),
                instance_httpd: true,
                host_name: Some("lab-host".into()),
                ..Drivers::default()
            },
            floating_range: Some((FLOATING_RANGE.parse::<Ipv4Network>().expect("a CIDR"), PUBLIC_INTERFACE.into())),
            ..Options::default()
        }
    }

    /// The namespace of instance `id`.
    pub fn instance(&self, id: &str) -> String {
        format!("{}{id}", self.instance_prefix())
    }

    /// `program args…` in namespace `ns`; its stdout, or the error with its stderr.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{program} {} in {ns}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Whether one ping from `ns` to `to` is answered within a second.
    pub fn ping(&self, ns: &str, to: Ipv4Addr) -> bool {
        self.exec(ns, "busybox", &["ping", "-c", "1", "-W", "1", &to.to_string()]).is_ok()
    }

    /// The IPv4 addresses (with prefix) of `dev` in `ns`.
    pub fn addresses(&self, ns: &str, dev: &str) -> Vec<String> {
        let out = self.exec(ns, "ip", &["-4", "-o", "addr", "show", "dev", dev]).unwrap_or_default();
        out.lines().filter_map(|l| l.split_whitespace().nth(3).map(str::to_string)).collect()
    }

    /// The processes running in `ns`, as `pid command line`.
    pub fn processes(&self, ns: &str) -> Vec<String> {
        let pids = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&pids)
            .split_whitespace()
            .map(|pid| {
                let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!("{pid} {}", cmdline.replace('\0', " ").trim())
            })
            .collect()
    }

    /// What nimbus left in the host namespace: links other than the lab's own, nftables tables, processes.
    pub fn host_leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let links = self.exec(&self.host, "ip", &["-o", "link", "show"]).unwrap_or_default();
        for line in links.lines() {
            let name = line.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string());
            if let Some(name) = name.filter(|n| n != "lo" && n != PUBLIC_INTERFACE) {
                left.push(format!("link {name}"));
            }
        }
        let tables = self.exec(&self.host, "nft", &["list", "tables"]).unwrap_or_default();
        left.extend(tables.lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_string()));
        left.extend(self.processes(&self.host).into_iter().map(|p| format!("process {p}")));
        let addresses = self.addresses(&self.host, PUBLIC_INTERFACE);
        left.extend(
            addresses.into_iter().filter(|a| a != &format!("{HOST_PUBLIC}/24")).map(|a| format!("address {a}")),
        );
        left.extend(process::namespaces_with_prefix(&self.instance_prefix()).into_iter().map(|n| format!("netns {n}")));
        left
    }
}

/// An HTTP GET of `/` on `to:80` from namespace `ns`: the body, or why not.
pub async fn http_get(ns: &str, to: Ipv4Addr) -> Result<String, String> {
    kernel::http_get(Some(ns), SocketAddr::from((to, 80))).await.map_err(|e| nimbus_protocol::failure::chain(&e))
}

impl Drop for Lab {
    fn drop(&mut self) {
        remove_all(&self.prefix);
    }
}

/// Kills every process in the namespaces named `prefix…`, then deletes them.
fn remove_all(prefix: &str) {
    for ns in process::namespaces_with_prefix(prefix) {
        process::remove_namespace_now(&ns);
    }
}
