//! The `linux` dataplane driver: bridges, VXLAN or 802.1Q segments, one dnsmasq per DHCP network, the
//! `ip nimbus` nftables table and floating addresses on the public interfaces, all in one network namespace
//! (the host's own, or a named one for labs and tests).
//!
//! Every operation makes the kernel match the desired state it is given and touches only what is nimbus's:
//! its bridges and segment links, addresses marked with nimbus's address protocol, its own nftables table,
//! and the dnsmasq processes whose pid files it keeps. The driver outlives the actors that call it, so a
//! restarted network manager re-applies the same state without tearing anything down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nimbus_storage::ids::{NetworkId, ProjectId};
use nimbus_storage::records::NetworkMode;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use super::dataplane::{Dataplane, DataplaneError, DataplaneFuture, HostSegment, LeaseEvent, Nat, Segment, VpnForward};
use super::dnsmasq::{self, DhcpFiles};
use crate::linux::nft::{self, FloatingRule, NatTable, VpnRule};
use crate::linux::{LinuxError, netlink, process, write_atomically, write_executable};

/// A lease-event file this large, fully read, is started afresh (every renewal appends a line).
const EVENTS_ROTATE_AT: usize = 1 << 20;

/// The address protocol (`ip address … proto 110`) that marks floating addresses as nimbus's.
pub const FLOATING_ADDRESS_PROTOCOL: u8 = 110;

/// How VLAN-mode networks are segmented on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    /// A VXLAN link per project (VNI = the network's VLAN id): no VLAN-capable switch needed.
    Vxlan,
    /// An 802.1Q link on the network's bridge interface, as nova did; needs the kernel's 8021q module.
    Vlan,
}

#[derive(Clone, Debug)]
pub struct LinuxConfig {
    /// The network namespace everything lives in; `None` is nimbus's own (a real network host).
    pub netns: Option<String>,
    /// DHCP hosts files, pid files, lease scripts and the segments applied.
    pub state_dir: PathBuf,
    pub segments: SegmentKind,
    /// VXLAN: the underlay device and multicast group that reach the other hosts of a segment.
    pub vxlan_dev: Option<String>,
    pub vxlan_group: Option<Ipv4Addr>,
}

pub struct LinuxDataplane {
    inner: Arc<Inner>,
}

struct Inner {
    config: LinuxConfig,
    /// Serializes segment changes: concurrent callers may pass states read at different times.
    segments: tokio::sync::Mutex<()>,
    dhcp: Mutex<BTreeMap<NetworkId, DhcpServer>>,
    nat: tokio::sync::Mutex<NatState>,
    events: Mutex<Option<mpsc::UnboundedSender<LeaseEvent>>>,
    event_offsets: Mutex<BTreeMap<NetworkId, u64>>,
}

#[derive(Default)]
struct NatState {
    /// The last NAT state asked for; `None` until the first `apply_nat` since the driver started, so a VPN
    /// change before it cannot replace the table without the floating addresses.
    nat: Option<Nat>,
    vpns: BTreeMap<ProjectId, VpnForward>,
}

struct DhcpServer {
    segment: Segment,
    server: Ipv4Addr,
    pid: u32,
    /// Held so the process is reaped when it ends (`None` for one adopted from a previous run of nimbus);
    /// liveness is read from `/proc`.
    _child: Option<tokio::process::Child>,
}

fn fail(e: LinuxError) -> DataplaneError {
    DataplaneError(e.to_string())
}

impl LinuxDataplane {
    /// Checks root and the tools, enables forwarding in the namespace, and starts the housekeeping task
    /// (lease events, restarting dnsmasq processes that died).
    pub async fn start(mut config: LinuxConfig) -> Result<LinuxDataplane, LinuxError> {
        crate::linux::check_prerequisites(&["ip", "nft", "dnsmasq"])?;
        std::fs::create_dir_all(config.state_dir.join("segments"))
            .map_err(LinuxError::io(format!("create {}", config.state_dir.display())))?;
        // dnsmasq changes to `/` and its scripts run anywhere: every path handed out must be absolute.
        config.state_dir = std::fs::canonicalize(&config.state_dir)
            .map_err(LinuxError::io(format!("resolve {}", config.state_dir.display())))?;
        crate::linux::in_netns(config.netns.as_deref(), || {
            netlink::set_sysctl("net.ipv4.ip_forward", "1")?;
            // Bridged frames must not go through the ip family's hooks (br_netfilter): nimbus filters them in
            // the bridge family, and its routed isolation rules would otherwise drop traffic within a network.
            for family in ["iptables", "ip6tables", "arptables"] {
                let path = format!("net.bridge.bridge-nf-call-{family}");
                if std::path::Path::new(&format!("/proc/sys/{}", path.replace('.', "/"))).exists() {
                    netlink::set_sysctl(&path, "0")?;
                }
            }
            Ok(())
        })
        .await?;
        let inner = Arc::new(Inner {
            config,
            segments: tokio::sync::Mutex::new(()),
            dhcp: Mutex::new(BTreeMap::new()),
            nat: tokio::sync::Mutex::new(NatState::default()),
            events: Mutex::new(None),
            event_offsets: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(housekeeping(Arc::downgrade(&inner)));
        Ok(LinuxDataplane { inner })
    }

    /// The pids of the DHCP servers it runs, by network.
    pub fn dhcp_pids(&self) -> BTreeMap<NetworkId, u32> {
        self.inner.dhcp.lock().expect("dhcp lock").iter().map(|(n, s)| (*n, s.pid)).collect()
    }
}

impl Dataplane for LinuxDataplane {
    fn kind(&self) -> &'static str {
        "linux"
    }

    fn ensure_segment(&self, segment: Segment) -> DataplaneFuture<'_> {
        Box::pin(async move { self.inner.ensure_segment(segment).await.map_err(fail) })
    }

    fn remove_segment(&self, network: NetworkId) -> DataplaneFuture<'_> {
        Box::pin(async move { self.inner.remove_segment(network).await.map_err(fail) })
    }

    fn ensure_host_segment(&self, segment: HostSegment) -> DataplaneFuture<'_> {
        Box::pin(async move { self.inner.ensure_host_segment(segment).await.map_err(fail) })
    }

    fn apply_nat(&self, nat: Nat) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let mut state = self.inner.nat.lock().await;
            state.nat = Some(nat);
            self.inner.apply_nat(&state).await.map_err(fail)
        })
    }

    fn ensure_vpn(&self, project: ProjectId, vpn: Option<VpnForward>) -> DataplaneFuture<'_> {
        Box::pin(async move {
            let mut state = self.inner.nat.lock().await;
            let changed = match vpn {
                Some(vpn) => state.vpns.insert(project, vpn.clone()) != Some(vpn),
                None => state.vpns.remove(&project).is_some(),
            };
            if changed && state.nat.is_some() {
                self.inner.apply_nat(&state).await.map_err(fail)?;
            }
            Ok(())
        })
    }

    fn release_lease(&self, network: NetworkId, mac: String, address: Ipv4Addr) -> DataplaneFuture<'_> {
        Box::pin(async move { self.inner.release_lease(network, &mac, address).await.map_err(fail) })
    }

    fn subscribe(&self, events: mpsc::UnboundedSender<LeaseEvent>) {
        *self.inner.events.lock().expect("events lock") = Some(events);
    }
}

/// The link that carries a VLAN-mode network off this host.
fn segment_link(segment: &HostSegment, kind: SegmentKind) -> Option<String> {
    let vlan = segment.vlan.filter(|_| segment.mode == NetworkMode::Vlan)?;
    Some(match kind {
        SegmentKind::Vxlan => format!("vx{vlan}"),
        SegmentKind::Vlan => format!("vlan{vlan}"),
    })
}

impl Inner {
    fn netns(&self) -> Option<&str> {
        self.config.netns.as_deref()
    }

    fn saved_segment(&self, network: NetworkId) -> PathBuf {
        self.config.state_dir.join("segments").join(format!("{network}.json"))
    }

    /// Remembers which links a network has here, so `remove_segment` finds them after a restart too.
    fn save_segment(&self, segment: &HostSegment) -> Result<(), LinuxError> {
        let saved = serde_json::to_vec_pretty(segment).expect("a segment serializes");
        let path = self.saved_segment(segment.network);
        if std::fs::read(&path).is_ok_and(|current| current == saved) {
            return Ok(());
        }
        write_atomically(&path, &saved)
    }

    async fn ensure_segment(&self, segment: Segment) -> Result<(), LinuxError> {
        let _serial = self.segments.lock().await;
        self.save_segment(&segment.host_part())?;

        let plumbing = self.plumbing();
        let s = segment.clone();
        netlink::in_netns(self.netns(), move |h| async move {
            let bridge = plumbing.plumb(&h, &s.host_part()).await?;
            // The bridge is the network's router (its gateway) and DHCP server.
            let prefix = s.cidr.prefix();
            let mut wanted: BTreeSet<Ipv4Addr> = [s.gateway].into();
            wanted.extend(s.dhcp.as_ref().map(|(server, _)| *server));
            let present = netlink::addresses(&h, Some(bridge)).await?;
            for a in present.iter().filter(|a| !(wanted.contains(&a.address) && a.prefix == prefix)) {
                netlink::delete_address(&h, a.message.clone()).await?;
            }
            for address in wanted {
                if !present.iter().any(|a| a.address == address && a.prefix == prefix) {
                    netlink::add_address(&h, bridge, address, prefix, None).await?;
                }
            }
            Ok(())
        })
        .await?;

        match &segment.dhcp {
            Some((server, hosts)) => self.ensure_dhcp(&segment, *server, hosts).await,
            None => {
                self.stop_dhcp(segment.network).await;
                Ok(())
            }
        }
    }

    fn plumbing(&self) -> Plumbing {
        Plumbing {
            kind: self.config.segments,
            vxlan_dev: self.config.vxlan_dev.clone(),
            vxlan_group: self.config.vxlan_group,
        }
    }

    async fn ensure_host_segment(&self, segment: HostSegment) -> Result<(), LinuxError> {
        let _serial = self.segments.lock().await;
        self.save_segment(&segment)?;
        let plumbing = self.plumbing();
        netlink::in_netns(self.netns(), move |h| async move { plumbing.plumb(&h, &segment).await.map(|_| ()) }).await
    }

    async fn remove_segment(&self, network: NetworkId) -> Result<(), LinuxError> {
        let _serial = self.segments.lock().await;
        self.stop_dhcp(network).await;
        let path = self.saved_segment(network);
        let Ok(saved) = std::fs::read(&path) else { return Ok(()) };
        let segment: HostSegment = serde_json::from_slice(&saved)
            .map_err(|e| LinuxError::Unsupported(format!("{} is not a segment: {e}", path.display())))?;
        let kind = self.config.segments;
        netlink::in_netns(self.netns(), move |h| async move {
            if let Some(link) = segment_link(&segment, kind) {
                netlink::delete_link(&h, &link).await?;
            }
            netlink::delete_link(&h, &segment.bridge).await
        })
        .await?;
        let _ = std::fs::remove_dir_all(DhcpFiles::new(&self.config.state_dir, network).dir);
        self.event_offsets.lock().expect("offsets lock").remove(&network);
        std::fs::remove_file(&path).map_err(LinuxError::io(format!("remove {}", path.display())))
    }

    /// Writes the hosts file and makes sure the network's dnsmasq runs with the right arguments: started if
    /// missing, reloaded (SIGHUP) when only the hosts changed, restarted when its arguments did.
    async fn ensure_dhcp(
        &self,
        segment: &Segment,
        server: Ipv4Addr,
        hosts: &BTreeSet<DhcpHost>,
    ) -> Result<(), LinuxError> {
        let files = DhcpFiles::new(&self.config.state_dir, segment.network);
        std::fs::create_dir_all(&files.dir).map_err(LinuxError::io(format!("create {}", files.dir.display())))?;
        let hosts_text = dnsmasq::hosts_file(hosts);
        let hosts_changed = std::fs::read_to_string(files.hosts()).ok().as_deref() != Some(hosts_text.as_str());
        if hosts_changed {
            write_atomically(&files.hosts(), hosts_text.as_bytes())?;
        }
        let args = dnsmasq::args(segment, server, &files);
        let running = {
            let dhcp = self.dhcp.lock().expect("dhcp lock");
            dhcp.get(&segment.network)
                .filter(|s| process::alive(s.pid))
                .map(|s| (s.pid, dnsmasq::args(&s.segment, s.server, &files) == args))
        };
        match running {
            Some((pid, true)) => {
                if hosts_changed {
                    process::signal(pid, Signal::SIGHUP);
                }
                Ok(())
            }
            Some((_, false)) => {
                self.stop_dhcp(segment.network).await;
                self.start_dhcp(segment.clone(), server).await
            }
            None => match adoptable(&files, &args) {
                // A previous run of nimbus left it serving with the same arguments: keep it, and the leases
                // it holds.
                Some(pid) => {
                    tracing::info!(bridge = %segment.bridge, pid, "adopting the running dnsmasq");
                    process::signal(pid, Signal::SIGHUP);
                    let server = DhcpServer { segment: segment.clone(), server, pid, _child: None };
                    self.dhcp.lock().expect("dhcp lock").insert(segment.network, server);
                    Ok(())
                }
                None => self.start_dhcp(segment.clone(), server).await,
            },
        }
    }

    async fn start_dhcp(&self, segment: Segment, server: Ipv4Addr) -> Result<(), LinuxError> {
        let files = DhcpFiles::new(&self.config.state_dir, segment.network);
        write_executable(&files.script(), &dnsmasq::script(&files))?;
        if !files.hosts().exists() {
            write_atomically(&files.hosts(), b"")?;
        }
        stop_stale(&files).await;
        let args = dnsmasq::args(&segment, server, &files);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log_path = files.dir.join("dnsmasq.log");
        let log = std::fs::File::create(&log_path).map_err(LinuxError::io(format!("create {}", log_path.display())))?;
        let mut command = process::command_in(self.netns(), "dnsmasq", &args);
        command.stderr(log);
        let child = command.spawn().map_err(LinuxError::io("start dnsmasq"))?;
        let pid = child.id().unwrap_or_default();
        // dnsmasq writes its pid file once it is bound; an early exit (a bad address, the port in use) is
        // reported with its own words.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if !process::alive(pid) {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(LinuxError::Command {
                    command: format!("dnsmasq for {}", segment.bridge),
                    detail: format!("exited at start: {}", said.trim()),
                });
            }
            if files.pid().exists() || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(bridge = %segment.bridge, pid, "dnsmasq started");
        self.dhcp
            .lock()
            .expect("dhcp lock")
            .insert(segment.network, DhcpServer { segment, server, pid, _child: Some(child) });
        Ok(())
    }

    async fn stop_dhcp(&self, network: NetworkId) {
        let server = self.dhcp.lock().expect("dhcp lock").remove(&network);
        if let Some(server) = server {
            process::stop(&[server.pid], Duration::from_secs(1)).await;
        }
        stop_stale(&DhcpFiles::new(&self.config.state_dir, network)).await;
    }

    async fn apply_nat(&self, state: &NatState) -> Result<(), LinuxError> {
        let nat = state.nat.clone().unwrap_or_default();
        let table = NatTable {
            floating: nat.floating.iter().map(|f| FloatingRule { floating: f.floating, fixed: f.fixed }).collect(),
            vpns: state
                .vpns
                .values()
                .map(|v| VpnRule { public: v.public_address, port: v.public_port, private: v.private_address })
                .collect(),
            fixed_ranges: nat.snat_ranges.iter().copied().collect(),
        };
        // Addresses first, so a new floating address answers ARP by the time its DNAT rule exists.
        let wanted: BTreeSet<(Ipv4Addr, String)> =
            nat.floating.iter().map(|f| (f.floating, f.interface.clone())).collect();
        let missing = netlink::in_netns(self.netns(), move |h| async move { bind_floating(&h, &wanted).await }).await?;
        nft::apply(self.netns(), &nft::replace_table(nft::NAT_TABLE, nft::nat_body(&table).as_deref())).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<String> = missing.into_iter().collect();
        Err(LinuxError::Unsupported(format!(
            "the public interface {} of a floating pool does not exist on the network host, so its floating \
             addresses are not bound (create the interface, or the pool with --interface naming one that exists)",
            missing.join(", ")
        )))
    }

    async fn release_lease(&self, network: NetworkId, mac: &str, address: Ipv4Addr) -> Result<(), LinuxError> {
        let server = {
            let dhcp = self.dhcp.lock().expect("dhcp lock");
            dhcp.get(&network).map(|s| (s.server, s.segment.bridge.clone()))
        };
        let Some((server, _)) = server else { return Ok(()) };
        super::dhcp_release::send(self.netns(), server, mac, address).await
    }

    /// Reads what the lease scripts appended since the last pass and hands it to the subscriber.
    fn forward_lease_events(&self) {
        use std::io::{Read, Seek, SeekFrom};
        let Some(events) = self.events.lock().expect("events lock").clone() else { return };
        let networks: Vec<NetworkId> = self.dhcp.lock().expect("dhcp lock").keys().copied().collect();
        let mut offsets = self.event_offsets.lock().expect("offsets lock");
        for network in networks {
            let files = DhcpFiles::new(&self.config.state_dir, network);
            let Ok(mut file) = std::fs::File::open(files.events()) else { continue };
            let offset = offsets.entry(network).or_insert(0);
            // Only what was appended since the last pass.
            let mut new = Vec::new();
            if file.seek(SeekFrom::Start(*offset)).and_then(|_| file.read_to_end(&mut new)).is_err() {
                continue;
            }
            // Only whole lines: the script may be writing the next one.
            let Some(end) = new.iter().rposition(|b| *b == b'\n').map(|i| i + 1) else { continue };
            for event in dnsmasq::parse_events(network, &String::from_utf8_lossy(&new[..end])) {
                if events.send(event).is_err() {
                    return;
                }
            }
            *offset += end as u64;
            let read = usize::try_from(*offset).unwrap_or(usize::MAX);
            if end == new.len() && read > EVENTS_ROTATE_AT {
                rotate_events(&files, network, &events, read);
                *offset = 0;
            }
        }
    }

    /// Restarts the DHCP servers that died.
    async fn restart_dead_dhcp(&self) {
        let dead: Vec<(Segment, Ipv4Addr)> = {
            let dhcp = self.dhcp.lock().expect("dhcp lock");
            dhcp.values().filter(|s| !process::alive(s.pid)).map(|s| (s.segment.clone(), s.server)).collect()
        };
        for (segment, server) in dead {
            let _serial = self.segments.lock().await;
            tracing::warn!(bridge = %segment.bridge, "dnsmasq died; restarting it");
            if let Err(e) = self.start_dhcp(segment.clone(), server).await {
                tracing::warn!(bridge = %segment.bridge, cause = %e, "dnsmasq did not restart; retrying");
            }
        }
    }
}

use super::dataplane::DhcpHost;

/// How this host builds a network's bridge and segment.
struct Plumbing {
    kind: SegmentKind,
    vxlan_dev: Option<String>,
    vxlan_group: Option<Ipv4Addr>,
}

impl Plumbing {
    /// The bridge (up, fixed MAC), the VLAN-mode segment link or the flat uplink on it. Returns the bridge.
    async fn plumb(&self, h: &rtnetlink::Handle, s: &HostSegment) -> Result<u32, LinuxError> {
        let bridge = netlink::ensure_bridge(h, &s.bridge).await?;
        if let Some(link) = segment_link(s, self.kind) {
            let vlan = s.vlan.expect("a VLAN network has a VLAN id");
            match self.kind {
                SegmentKind::Vxlan => {
                    let dev = match s.bridge_interface.as_deref().or(self.vxlan_dev.as_deref()) {
                        Some(dev) => Some(netlink::index(h, dev).await?),
                        None => None,
                    };
                    netlink::ensure_vxlan(h, &link, u32::from(vlan), dev, self.vxlan_group).await?;
                }
                SegmentKind::Vlan => {
                    let base = s.bridge_interface.as_deref().ok_or_else(|| {
                        LinuxError::Unsupported(format!(
                            "the VLAN network on {} needs a bridge interface for its 802.1Q link",
                            s.bridge
                        ))
                    })?;
                    netlink::ensure_vlan(h, &link, base, vlan).await?;
                }
            }
            netlink::attach(h, &link, bridge).await?;
        } else if let Some(uplink) = &s.bridge_interface {
            netlink::attach(h, uplink, bridge).await?;
        }
        Ok(bridge)
    }
}

/// Moves a fully read event file aside so the script starts a new one, and forwards what the script appended
/// in between.
fn rotate_events(files: &DhcpFiles, network: NetworkId, events: &mpsc::UnboundedSender<LeaseEvent>, forwarded: usize) {
    let (current, old) = (files.events(), files.events().with_extension("old"));
    if std::fs::rename(&current, &old).is_err() {
        return;
    }
    if let Ok(text) = std::fs::read(&old) {
        let late = &text[forwarded.min(text.len())..];
        for event in dnsmasq::parse_events(network, &String::from_utf8_lossy(late)) {
            let _ = events.send(event);
        }
    }
    let _ = std::fs::remove_file(&old);
}

/// Makes the floating addresses bound to the public interfaces exactly `wanted`, leaving every address not
/// marked as nimbus's alone. Returns the interfaces that do not exist (their addresses cannot be bound; the
/// rest are).
async fn bind_floating(
    h: &rtnetlink::Handle,
    wanted: &BTreeSet<(Ipv4Addr, String)>,
) -> Result<BTreeSet<String>, LinuxError> {
    let links = netlink::links(h).await?;
    let names: BTreeMap<u32, &String> = links.iter().map(|(name, index)| (*index, name)).collect();
    let mut present = BTreeSet::new();
    for a in netlink::addresses(h, None).await? {
        let Some(link) = names.get(&a.link).filter(|_| a.protocol == Some(FLOATING_ADDRESS_PROTOCOL)) else {
            continue;
        };
        if wanted.contains(&(a.address, link.to_string())) {
            present.insert((a.address, link.to_string()));
        } else {
            netlink::delete_address(h, a.message).await?;
        }
    }
    let mut missing = BTreeSet::new();
    for (address, interface) in wanted.difference(&present) {
        match links.get(interface) {
            Some(index) => netlink::add_address(h, *index, *address, 32, Some(FLOATING_ADDRESS_PROTOCOL)).await?,
            None => {
                missing.insert(interface.clone());
            }
        }
    }
    Ok(missing)
}

/// The dnsmasq named by the pid file, if it runs with exactly `args`.
fn adoptable(files: &DhcpFiles, args: &[String]) -> Option<u32> {
    let pid = std::fs::read_to_string(files.pid()).ok()?.trim().parse::<u32>().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let running: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let (program, running_args) = running.split_first()?;
    (program.ends_with("dnsmasq") && running_args == args && process::alive(pid)).then_some(pid)
}

/// Stops a dnsmasq a previous run of nimbus left behind (its pid file names it).
async fn stop_stale(files: &DhcpFiles) {
    let pid = std::fs::read_to_string(files.pid()).ok().and_then(|p| p.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        let is_dnsmasq = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("dnsmasq"));
        if is_dnsmasq {
            process::stop(&[pid], Duration::from_secs(1)).await;
        }
    }
    let _ = std::fs::remove_file(files.pid());
}

/// Lease events every 100 ms; dead dnsmasq processes every second. Ends with the driver.
async fn housekeeping(inner: Weak<Inner>) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.forward_lease_events();
        ticks += 1;
        if ticks.is_multiple_of(10) {
            inner.restart_dead_dhcp().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::TestNetns;
    use crate::network::dataplane::contract::{Observed, check};

    #[test]
    fn a_rotated_event_file_loses_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let network = NetworkId::random();
        let files = DhcpFiles::new(dir.path(), network);
        std::fs::create_dir_all(&files.dir).unwrap();
        let first = "add fa:16:3e:00:00:01 10.0.0.2\n";
        std::fs::write(files.events(), format!("{first}del fa:16:3e:00:00:02 10.0.0.3\n")).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        rotate_events(&files, network, &tx, first.len());
        let late = rx.try_recv().expect("the line appended after the last read is forwarded");
        assert_eq!(
            (late.action, late.address),
            (super::super::dataplane::LeaseAction::Del, "10.0.0.3".parse().unwrap())
        );
        assert!(rx.try_recv().is_err(), "what was forwarded before is not forwarded again");
        assert!(!files.events().exists() && !files.events().with_extension("old").exists());
    }

    #[tokio::test]
    async fn the_linux_driver_keeps_the_contract() {
        let Some(netns) = TestNetns::new("dataplane", &["ip", "nft", "dnsmasq"]) else { return };
        netns.ip(&["link", "add", "pub0", "type", "veth", "peer", "name", "pub1"]);
        let state = tempfile::tempdir().unwrap();
        let driver = LinuxDataplane::start(LinuxConfig {
            netns: Some(netns.name.clone()),
            state_dir: state.path().to_path_buf(),
            segments: SegmentKind::Vxlan,
            vxlan_dev: None,
            vxlan_group: None,
        })
        .await
        .unwrap();
        let name = netns.name.clone();
        check(&driver, "pub0", || async {
            let name = Some(name.clone());
            let bridges =
                netlink::in_netns(name.as_deref(), |h| async move { netlink::links(&h).await }).await.unwrap();
            let table = nft::list(name.as_deref(), nft::NAT_TABLE).await.unwrap();
            // `ip daddr F dnat to X` appears once in prerouting and once in output.
            let floating = table
                .lines()
                .filter_map(|l| {
                    let l = l.trim();
                    let rest = l.strip_prefix("ip daddr ")?;
                    let (floating, fixed) = rest.split_once(" dnat to ")?;
                    Some((floating.parse().ok()?, fixed.parse().ok()?))
                })
                .collect();
            Observed {
                bridges: bridges.into_keys().filter(|name| name.starts_with("brc")).collect(),
                dhcp: driver.dhcp_pids().into_iter().filter(|(_, pid)| process::alive(*pid)).map(|(n, _)| n).collect(),
                floating,
            }
        })
        .await;
    }
}
