//! The `netns` virt driver: an instance is a Linux network namespace named after it, with a veth pair (the
//! host end on its network's bridge, the guest end `eth0` with its MAC). Flat networks get the address
//! injected (an interfaces file written for the instance, then applied); DHCP networks run `busybox udhcpc`
//! inside the namespace, which writes the instance's `resolv.conf` into its directory. Optionally `busybox
//! httpd` answers with the instance's name, so tests and operators can check reachability. The driver also keeps each port's anti-spoofing rules (`bridge nimbus`) and
//! enforces the host's security groups on them (`ip nimbus-firewall`), as nova's compute firewall did; both
//! tables are replaced together, in one batch, whenever a port or the firewall changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nimbus_protocol::compute::{Addressing, Capacity, InstanceSpec, NicSpec, PowerAction, VirtError};
use nimbus_protocol::failure::{Failure, chain};
use nimbus_protocol::firewall::HostFirewall;
use nimbus_protocol::ids::InstanceId;

use super::virt::{DriverFuture, VirtDriver};
use crate::kernel::firewall;
use crate::kernel::nft::{self, PortFilter};
use crate::kernel::{KernelError, netlink, netns_path, process, write_executable};

#[derive(Clone, Debug)]
pub struct NetnsConfig {
    /// The namespace the bridges live in (the dataplane's); `None` is nimbus's own.
    pub host_netns: Option<String>,
    /// Instance namespaces are `<prefix><instance id>`.
    pub prefix: String,
    /// Instance specs, interfaces files, web roots, the DHCP client script.
    pub state_dir: PathBuf,
    /// Run `busybox httpd` on port 80 in every instance, answering with the instance's name.
    pub httpd: bool,
    pub capacity: Capacity,
}

pub struct NetnsDriver {
    config: NetnsConfig,
    filters: tokio::sync::Mutex<Filters>,
    /// Set once the host namespace hands bridged frames to the ip family's hooks (br_netfilter).
    bridged_filtering: tokio::sync::OnceCell<()>,
}

/// What the filter tables are rendered from, whole.
struct Filters {
    /// The ports of every instance here, by instance. Loaded from the saved specs at start.
    ports: BTreeMap<InstanceId, Vec<PortFilter>>,
    /// The host's firewall as last given, saved so that a restarted nimbus renders the same tables before
    /// the publisher is reached.
    firewall: HostFirewall,
}

/// Where the last firewall is saved, under the state directory.
const FIREWALL_FILE: &str = "firewall.json";

const UDHCPC_SCRIPT: &str = "#!/bin/sh
# busybox udhcpc calls this with deconfig, bound, renew, leasefail or nak.
case \"$1\" in
  deconfig) ip -4 addr flush dev \"$interface\"; ip link set \"$interface\" up ;;
  bound|renew)
    if [ -n \"$mtu\" ]; then ip link set dev \"$interface\" mtu \"$mtu\"; fi
    ip addr replace \"$ip/$mask\" dev \"$interface\"
    # The first interface has the default route (nova's use_single_default_gateway).
    if [ -n \"$router\" ] && [ \"$interface\" = eth0 ]; then
      ip route replace default via \"${router%% *}\" dev \"$interface\"
    fi
    # The guest's resolv.conf, kept in its directory (the namespace shares the host's /etc).
    if [ -n \"$NIMBUS_RESOLV_CONF\" ]; then
      { if [ -n \"$domain\" ]; then echo \"search $domain\"; fi
        for server in $dns; do echo \"nameserver $server\"; done; } > \"$NIMBUS_RESOLV_CONF\"
    fi ;;
esac
exit 0
";

fn spawn_error(id: InstanceId) -> impl Fn(KernelError) -> VirtError {
    move |e| VirtError::Spawn { id, cause: Failure::of(&e) }
}

/// The host end of an instance's `n`th interface: `nv` + 11 hex digits of its id + `n` (15 characters at
/// most, the kernel's limit).
pub fn host_port(id: InstanceId, n: usize) -> String {
    format!("nv{}{n}", &id.0.simple().to_string()[..11])
}

fn guest_port(id: InstanceId, n: usize) -> String {
    format!("ng{}{n}", &id.0.simple().to_string()[..11])
}

/// The specs of the instances saved under `dir` at spawn.
fn saved_specs(dir: &std::path::Path) -> BTreeMap<InstanceId, InstanceSpec> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .filter_map(|e| {
            let spec: InstanceSpec =
                serde_json::from_slice(&std::fs::read(e.ok()?.path().join("spec.json")).ok()?).ok()?;
            Some((spec.id, spec))
        })
        .collect()
}

/// The instance's ports, as their filters see them.
fn port_filters(spec: &InstanceSpec) -> Vec<PortFilter> {
    spec.interfaces
        .iter()
        .enumerate()
        .map(|(n, nic)| PortFilter {
            port: host_port(spec.id, n),
            instance: spec.id,
            mac: nic.mac.clone(),
            address: nic.address,
            // The network side serves DHCP from the gateway address (`network_plan` makes them one).
            dhcp_server: nic.gateway,
        })
        .collect()
}

/// The Debian interfaces file injected into a flat-network instance.
pub fn interfaces_file(nics: &[NicSpec]) -> String {
    let mut text = String::from("auto lo\niface lo inet loopback\n");
    for (n, nic) in nics.iter().enumerate() {
        if nic.addressing == Addressing::Injected {
            text.push_str(&format!(
                "\nauto eth{n}\niface eth{n} inet static\n    address {}/{}\n",
                nic.address,
                nic.cidr.prefix()
            ));
            // Only the first interface has a gateway (one default route).
            if n == 0 {
                text.push_str(&format!("    gateway {}\n", nic.gateway));
            }
        } else {
            text.push_str(&format!("\nauto eth{n}\niface eth{n} inet dhcp\n"));
        }
    }
    text
}

impl NetnsDriver {
    pub fn new(mut config: NetnsConfig) -> Result<NetnsDriver, KernelError> {
        crate::kernel::check_prerequisites(&["ip", "nft", "busybox"])?;
        let dir = config.state_dir.join("instances");
        std::fs::create_dir_all(&dir).map_err(KernelError::io(format!("create {}", dir.display())))?;
        // Processes in instances run with `/` or elsewhere as their directory: paths must be absolute.
        config.state_dir = std::fs::canonicalize(&config.state_dir)
            .map_err(KernelError::io(format!("resolve {}", config.state_dir.display())))?;
        write_executable(&config.state_dir.join("udhcpc.script"), UDHCPC_SCRIPT)?;
        let ports = saved_specs(&dir).values().map(|spec| (spec.id, port_filters(spec))).collect();
        let firewall = std::fs::read(config.state_dir.join(FIREWALL_FILE))
            .ok()
            .and_then(|saved| serde_json::from_slice(&saved).ok())
            .unwrap_or_default();
        let filters = tokio::sync::Mutex::new(Filters { ports, firewall });
        Ok(NetnsDriver { config, filters, bridged_filtering: tokio::sync::OnceCell::new() })
    }

    pub fn namespace(&self, id: InstanceId) -> String {
        format!("{}{id}", self.config.prefix)
    }

    /// Where an instance's files are: its spec, interfaces file, logs, web root and `resolv.conf`.
    pub fn instance_dir(&self, id: InstanceId) -> PathBuf {
        self.config.state_dir.join("instances").join(id.to_string())
    }

    /// Records (`Some`) or forgets (`None`) the ports of instance `id`, and replaces the filter tables.
    async fn set_ports(&self, id: InstanceId, ports: Option<Vec<PortFilter>>) -> Result<(), KernelError> {
        let mut filters = self.filters.lock().await;
        match ports {
            Some(ports) => filters.ports.insert(id, ports),
            None => filters.ports.remove(&id),
        };
        self.apply_filters(&filters.ports, &filters.firewall).await
    }

    /// Installs `firewall` (saved first, so a restart renders it again) and replaces the filter tables. The
    /// firewall a restarted nimbus is given first is usually the one it saved, which the kernel has already.
    async fn install_firewall(&self, firewall: HostFirewall) -> Result<(), KernelError> {
        let mut filters = self.filters.lock().await;
        if filters.firewall == firewall {
            return Ok(());
        }
        // Recorded only once in the kernel: a failed apply is tried again with the next ask.
        self.apply_filters(&filters.ports, &firewall).await?;
        let path = self.config.state_dir.join(FIREWALL_FILE);
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, serde_json::to_vec(&firewall).expect("a firewall serializes"))
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(KernelError::io(format!("save {}", path.display())))?;
        filters.firewall = firewall;
        Ok(())
    }

    /// Replaces the anti-spoofing and the security-group tables in one batch.
    async fn apply_filters(
        &self,
        ports: &BTreeMap<InstanceId, Vec<PortFilter>>,
        firewall: &HostFirewall,
    ) -> Result<(), KernelError> {
        let netns = self.config.host_netns.clone();
        let all: Vec<PortFilter> = ports.values().flatten().cloned().collect();
        // Bridged frames reach the ip family's hooks, where the firewall tracks connections, only through
        // br_netfilter (needed only while there are ports to filter: the last destroy needs no module).
        if !all.is_empty() {
            self.bridged_filtering
                .get_or_try_init(|| {
                    crate::kernel::in_netns(netns.as_deref(), || {
                        let setting = "net.bridge.bridge-nf-call-iptables";
                        if !std::path::Path::new(&format!("/proc/sys/{}", setting.replace('.', "/"))).exists() {
                            return Err(KernelError::Unsupported(
                                "bridged traffic cannot be filtered: br_netfilter is not loaded (modprobe br_netfilter)"
                                    .into(),
                            ));
                        }
                        netlink::set_sysctl(setting, "1")
                    })
                })
                .await?;
        }
        let mut batch = nft::replace_table(nft::PORT_TABLE, nft::port_body(&all).as_deref());
        batch.push_str(&nft::replace_table(
            firewall::FIREWALL_TABLE,
            firewall::firewall_body(&all, firewall).as_deref(),
        ));
        nft::apply(netns.as_deref(), &batch).await
    }

    async fn spawn_instance(&self, spec: InstanceSpec) -> Result<(), KernelError> {
        let ns = self.namespace(spec.id);
        let dir = self.instance_dir(spec.id);
        if netns_path(&ns).exists() && dir.join("running").exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(KernelError::io(format!("create {}", dir.display())))?;
        let saved = serde_json::to_vec_pretty(&spec).expect("a spec serializes");
        std::fs::write(dir.join("spec.json"), saved).map_err(KernelError::io("save the instance spec"))?;
        process::ensure_namespace(&ns).await?;

        self.plug(&spec, 0).await?;
        let interfaces = interfaces_file(&spec.interfaces);
        std::fs::write(dir.join("interfaces"), &interfaces).map_err(KernelError::io("write the interfaces file"))?;
        netlink::in_netns(
            Some(&ns),
            |h| async move { netlink::set_up(&h, netlink::index(&h, "lo").await?, "lo").await },
        )
        .await?;
        self.set_guest_links(&spec, true).await?;
        self.set_ports(spec.id, Some(port_filters(&spec))).await?;
        self.start_guest(&spec).await?;
        std::fs::write(dir.join("running"), b"").map_err(KernelError::io("mark the instance running"))
    }

    /// Plugs the spec's interfaces from the `from`th on: a veth each, the host end on its network's bridge
    /// with the bridge's MTU, the guest end moved in as `eth<n>` with the interface's MAC.
    async fn plug(&self, spec: &InstanceSpec, from: usize) -> Result<(), KernelError> {
        let ns = self.namespace(spec.id);
        let (id, nics) = (spec.id, spec.interfaces[from..].to_vec());
        let target = ns.clone();
        // Ports take their bridge's MTU (a VXLAN segment lowers it), or large packets would be dropped.
        let mtus = netlink::in_netns(self.config.host_netns.as_deref(), move |h| async move {
            let netns = std::fs::File::open(netns_path(&target)).map_err(KernelError::io(format!("open {target}")))?;
            let mut mtus = Vec::new();
            for (n, nic) in (from..).zip(&nics) {
                let bridge = netlink::link(&h, &nic.bridge).await?.ok_or_else(|| {
                    KernelError::Unsupported(format!(
                        "bridge {} of network {} does not exist on this host",
                        nic.bridge, nic.network_label
                    ))
                })?;
                netlink::ensure_veth(&h, &host_port(id, n), &guest_port(id, n)).await?;
                let mtu = netlink::mtu_of(&bridge).unwrap_or(1500);
                netlink::set_mtu(&h, netlink::index(&h, &host_port(id, n)).await?, mtu).await?;
                netlink::attach(&h, &host_port(id, n), bridge.header.index).await?;
                if netlink::link(&h, &guest_port(id, n)).await?.is_some() {
                    netlink::move_to_netns(&h, &guest_port(id, n), &netns).await?;
                }
                mtus.push(mtu);
            }
            Ok(mtus)
        })
        .await?;
        let nics = spec.interfaces[from..].to_vec();
        netlink::in_netns(Some(&ns), move |h| async move {
            for ((n, nic), mtu) in (from..).zip(&nics).zip(mtus) {
                let eth = format!("eth{n}");
                if let Some(guest) = netlink::link(&h, &guest_port(id, n)).await? {
                    netlink::rename_and_set_mac(&h, guest.header.index, &eth, netlink::parse_mac(&nic.mac)?).await?;
                }
                netlink::set_mtu(&h, netlink::index(&h, &eth).await?, mtu).await?;
            }
            Ok(())
        })
        .await
    }

    /// Unplugs the interfaces of `saved` from the `from`th on: their DHCP clients stopped (releasing their
    /// leases), their veths deleted.
    async fn unplug(&self, saved: &InstanceSpec, from: usize) -> Result<(), KernelError> {
        let ns = self.namespace(saved.id);
        let gone: Vec<String> = (from..saved.interfaces.len()).map(|n| format!("eth{n}")).collect();
        for pid in process::pids_in(&ns).await? {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let on_gone = args.windows(2).any(|w| w[0] == b"-i" && gone.iter().any(|eth| w[1] == eth.as_bytes()));
            if on_gone {
                process::signal(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        let ports: Vec<String> = (from..saved.interfaces.len()).map(|n| host_port(saved.id, n)).collect();
        netlink::in_netns(self.config.host_netns.as_deref(), move |h| async move {
            for port in ports {
                netlink::delete_link(&h, &port).await?;
            }
            Ok(())
        })
        .await
    }

    /// Gives a running instance exactly `spec`'s interfaces: those after the first that differs from what it
    /// has are unplugged and plugged again in the new order (as a guest sees a NIC removed and the later ones
    /// renumbered), the ones before it are left alone.
    async fn set_instance_interfaces(&self, spec: InstanceSpec) -> Result<(), KernelError> {
        let dir = self.instance_dir(spec.id);
        let saved: InstanceSpec =
            match std::fs::read(dir.join("spec.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
                Some(saved) if netns_path(&self.namespace(spec.id)).exists() => saved,
                _ => return Err(KernelError::Unsupported(format!("instance {} does not run on this host", spec.id))),
            };
        let same = saved.interfaces.iter().zip(&spec.interfaces).take_while(|(a, b)| a.port == b.port).count();
        if same == saved.interfaces.len() && same == spec.interfaces.len() {
            return Ok(());
        }
        self.unplug(&saved, same).await?;
        // The new spec is saved before the plug, so a failure half-way is repaired by the next try.
        let bytes = serde_json::to_vec_pretty(&spec).expect("a spec serializes");
        std::fs::write(dir.join("spec.json"), bytes).map_err(KernelError::io("save the instance spec"))?;
        std::fs::write(dir.join("interfaces"), interfaces_file(&spec.interfaces))
            .map_err(KernelError::io("write the interfaces file"))?;
        self.plug(&spec, same).await?;
        self.set_guest_links(&spec, true).await?;
        self.set_ports(spec.id, Some(port_filters(&spec))).await?;
        self.start_dhcp_clients(&spec, same).await
    }

    /// What a booting guest starts: a DHCP client per DHCP interface and, if asked, the web server. Nothing
    /// is started twice: a guest with processes running is up already.
    async fn start_guest(&self, spec: &InstanceSpec) -> Result<(), KernelError> {
        let (ns, dir) = (self.namespace(spec.id), self.instance_dir(spec.id));
        if !process::pids_in(&ns).await?.is_empty() {
            return Ok(());
        }
        self.start_dhcp_clients(spec, 0).await?;
        if self.config.httpd {
            let www = dir.join("www");
            std::fs::create_dir_all(&www).map_err(KernelError::io("create the web root"))?;
            std::fs::write(www.join("index.html"), format!("{}\n", spec.name))
                .map_err(KernelError::io("write the web page"))?;
            let root = www.display().to_string();
            process::command_in(Some(&ns), "busybox", &["httpd", "-f", "-p", "80", "-h", &root])
                .spawn()
                .map_err(KernelError::io("start httpd"))?;
        }
        Ok(())
    }

    /// Starts a DHCP client for each DHCP interface from the `from`th on, as the guest's network service does.
    async fn start_dhcp_clients(&self, spec: &InstanceSpec, from: usize) -> Result<(), KernelError> {
        let (ns, dir) = (self.namespace(spec.id), self.instance_dir(spec.id));
        let script = self.config.state_dir.join("udhcpc.script").display().to_string();
        let dhcp =
            spec.interfaces.iter().enumerate().skip(from).filter(|(_, nic)| nic.addressing != Addressing::Injected);
        for (n, nic) in dhcp {
            let eth = format!("eth{n}");
            let hostname = format!("hostname:{}", nic.hostname);
            // Foreground, retrying forever like a booting guest; -R releases the lease when it is stopped.
            let args = [
                "udhcpc", "-f", "-R", "-i", &eth, "-s", &script, "-t", "20", "-T", "1", "-A", "1", "-x", &hostname,
                "-O", "mtu",
            ];
            let log = std::fs::File::create(dir.join(format!("udhcpc-{eth}.log")))
                .map_err(KernelError::io("create the DHCP client log"))?;
            let mut command = process::command_in(Some(&ns), "busybox", &args);
            command.env("NIMBUS_RESOLV_CONF", dir.join("resolv.conf"));
            command.stdout(log.try_clone().map_err(KernelError::io("log"))?).stderr(log);
            command.spawn().map_err(KernelError::io("start udhcpc"))?;
        }
        Ok(())
    }

    /// Takes the guest's interfaces down, or brings them up with their injected addresses and routes (a link
    /// going down takes its routes with it).
    async fn set_guest_links(&self, spec: &InstanceSpec, up: bool) -> Result<(), KernelError> {
        let nics = spec.interfaces.clone();
        netlink::in_netns(Some(&self.namespace(spec.id)), move |h| async move {
            for (n, nic) in nics.iter().enumerate() {
                let eth = format!("eth{n}");
                let index = netlink::index(&h, &eth).await?;
                if !up {
                    netlink::set_down(&h, index, &eth).await?;
                    continue;
                }
                netlink::set_up(&h, index, &eth).await?;
                if nic.addressing == Addressing::Injected {
                    netlink::add_address(&h, index, nic.address, nic.cidr.prefix(), None).await?;
                    // The first interface has the default route; the others reach their own subnets.
                    if n == 0 {
                        netlink::set_default_route(&h, nic.gateway).await?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Sends `signal` to every process of the guest (SIGSTOP freezes it, SIGCONT thaws it).
    async fn signal_guest(&self, id: InstanceId, signal: nix::sys::signal::Signal) -> Result<(), KernelError> {
        for pid in process::pids_in(&self.namespace(id)).await? {
            process::signal(pid, signal);
        }
        Ok(())
    }

    /// A power action: off is the guest's processes stopped (a DHCP client releases its lease, as a guest
    /// shutting down does) and its interfaces down; on is the reverse; a pause freezes the processes; a
    /// suspension freezes them and takes the interfaces down.
    async fn power_instance(&self, id: InstanceId, action: PowerAction) -> Result<(), KernelError> {
        use nix::sys::signal::Signal;
        let saved = std::fs::read(self.instance_dir(id).join("spec.json")).ok();
        let spec: InstanceSpec = match saved.and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(spec) if netns_path(&self.namespace(id)).exists() => spec,
            _ => return Err(KernelError::Unsupported(format!("instance {id} does not run on this host"))),
        };
        match action {
            PowerAction::Stop | PowerAction::SoftReboot | PowerAction::HardReboot => {
                // A frozen process takes its SIGTERM only once thawed.
                self.signal_guest(id, Signal::SIGCONT).await?;
                process::stop_all_in(&self.namespace(id), Duration::from_secs(1)).await?;
                self.set_guest_links(&spec, false).await?;
                if action != PowerAction::Stop {
                    self.set_guest_links(&spec, true).await?;
                    self.start_guest(&spec).await?;
                }
            }
            PowerAction::Start => {
                self.set_guest_links(&spec, true).await?;
                self.start_guest(&spec).await?;
            }
            PowerAction::Pause => self.signal_guest(id, Signal::SIGSTOP).await?,
            PowerAction::Suspend => {
                self.signal_guest(id, Signal::SIGSTOP).await?;
                self.set_guest_links(&spec, false).await?;
            }
            PowerAction::Unpause => self.signal_guest(id, Signal::SIGCONT).await?,
            PowerAction::Resume => {
                self.set_guest_links(&spec, true).await?;
                self.signal_guest(id, Signal::SIGCONT).await?;
            }
        }
        Ok(())
    }

    async fn destroy_instance(&self, id: InstanceId) -> Result<(), KernelError> {
        let ns = self.namespace(id);
        if netns_path(&ns).exists() {
            // SIGTERM first: the DHCP client releases its lease, as a guest shutting down does (a paused
            // guest is thawed first, or it would take its SIGTERM only at the SIGKILL).
            self.signal_guest(id, nix::sys::signal::Signal::SIGCONT).await?;
            process::stop_all_in(&ns, Duration::from_secs(1)).await?;
            process::run(process::command_in(None, "ip", &["netns", "del", &ns]), None).await?;
        }
        // Deleting the namespace deleted the guest ends and with them their host ends; a half-spawned pair
        // may still be on the host side.
        let dir = self.instance_dir(id);
        let saved: Option<InstanceSpec> =
            std::fs::read(dir.join("spec.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let ports: Vec<String> = (0..saved.map_or(0, |s| s.interfaces.len())).map(|n| host_port(id, n)).collect();
        netlink::in_netns(self.config.host_netns.as_deref(), move |h| async move {
            for port in ports {
                netlink::delete_link(&h, &port).await?;
            }
            Ok(())
        })
        .await?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(KernelError::io(format!("remove {}", dir.display())))?;
        }
        self.set_ports(id, None).await
    }
}

impl VirtDriver for NetnsDriver {
    fn kind(&self) -> &'static str {
        "netns"
    }

    fn capacity(&self) -> Capacity {
        self.config.capacity
    }

    fn spawn(&self, spec: InstanceSpec) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            let id = spec.id;
            match self.spawn_instance(spec).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Leave nothing half-built behind: the conductor may place the instance elsewhere.
                    if let Err(cleanup) = self.destroy_instance(id).await {
                        tracing::warn!(instance = %id, cause = %chain(&cleanup), "cleaning up a failed spawn failed");
                    }
                    Err(spawn_error(id)(e))
                }
            }
        })
    }

    fn destroy(&self, id: InstanceId) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            self.destroy_instance(id).await.map_err(|e| VirtError::Destroy { id, cause: Failure::of(&e) })
        })
    }

    fn power(&self, id: InstanceId, action: PowerAction) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            self.power_instance(id, action).await.map_err(|e| VirtError::Power { id, action, cause: Failure::of(&e) })
        })
    }

    fn set_interfaces(&self, spec: InstanceSpec) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            let id = spec.id;
            self.set_instance_interfaces(spec).await.map_err(|e| VirtError::Interfaces { id, cause: Failure::of(&e) })
        })
    }

    fn list(&self) -> DriverFuture<'_, Vec<InstanceId>> {
        Box::pin(async move {
            Ok(process::namespaces_with_prefix(&self.config.prefix)
                .iter()
                .filter_map(|name| name[self.config.prefix.len()..].parse().ok())
                .collect())
        })
    }

    fn filters_ports(&self) -> bool {
        true
    }

    fn set_firewall(&self, firewall: HostFirewall) -> DriverFuture<'_, ()> {
        Box::pin(async move { self.install_firewall(firewall).await.map_err(|e| VirtError::Firewall(Failure::of(&e))) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::virt::contract;
    use crate::kernel::TestNetns;

    #[tokio::test]
    async fn the_netns_driver_keeps_the_contract() {
        let Some(host) = TestNetns::new("virt", &["ip", "nft", "busybox"]) else { return };
        let state = tempfile::tempdir().unwrap();
        let driver = NetnsDriver::new(NetnsConfig {
            host_netns: Some(host.name.clone()),
            prefix: format!("{}-i-", host.name),
            state_dir: state.path().to_path_buf(),
            httpd: false,
            capacity: Capacity::default(),
        })
        .unwrap();
        contract::check(&driver).await;
        // A port on a bridge the host does not have fails after the namespace is made.
        let mut failing = contract::spec(5);
        failing.interfaces.push(NicSpec { bridge: "nobr0".into(), ..nic(Addressing::Injected, "10.0.0.5") });
        contract::check_failed_spawn(&driver, failing).await;
        assert!(process::namespaces_with_prefix(&format!("{}-i-", host.name)).is_empty(), "no namespace is left");
    }

    fn nic(addressing: Addressing, address: &str) -> NicSpec {
        NicSpec {
            port: nimbus_protocol::ids::PortId::generate(),
            network: nimbus_protocol::ids::NetworkId::generate(),
            network_label: "private".into(),
            mac: "fa:16:3e:00:00:01".into(),
            address: address.parse().unwrap(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            addressing,
            bridge: "br100".into(),
            bridge_interface: None,
            vlan: None,
            hostname: "vm1".into(),
            mtu: None,
        }
    }

    #[test]
    fn flat_interfaces_are_static_and_the_others_use_dhcp() {
        let text = interfaces_file(&[
            nic(Addressing::Injected, "10.0.0.2"),
            nic(Addressing::Dhcp, "10.0.0.3"),
            nic(Addressing::Injected, "10.0.0.4"),
        ]);
        assert!(text.contains("iface eth0 inet static\n    address 10.0.0.2/24\n    gateway 10.0.0.1\n"), "{text}");
        assert!(text.contains("iface eth1 inet dhcp\n"), "{text}");
        assert!(text.ends_with("iface eth2 inet static\n    address 10.0.0.4/24\n"), "only eth0 has a gateway: {text}");
        assert_eq!(host_port(InstanceId(uuid::Uuid::from_bytes([0xab; 16])), 0), "nvabababababa0");
    }
}
