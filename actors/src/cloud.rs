//! One whole cloud in one process: the store, the defaults, and the supervision tree.
//!
//! ```text
//! cloud                      (one_for_one)
//! ├── scheduler
//! ├── firewall               (the security-group firewalls the store implies, for the hosts that filter)
//! ├── network                (the network manager)
//! ├── vlans                  (one_for_one; children from the store and on demand)
//! │   └── vlan/<project>     (the project's VLAN segment, DHCP server, VPN endpoint)
//! ├── compute                (one_for_one)
//! │   └── compute/host-0001 … compute/host-NNNN
//! ├── projects               (one_for_one; children from the store and on demand)
//! │   └── conductor/<project>
//! └── gateway                (owns the HTTP listeners)
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use nimbus_protocol::compute::Capacity;
use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::HostId;
use nimbus_runtime::{ChildSpec, Intensity, Namespace, Supervisor, SupervisorArgs, SupervisorMsg};
use nimbus_storage::Store;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::app::App;
use crate::app::bootstrap;
use crate::app::error::CloudError;
use crate::compute::NodeAgents;
use crate::compute::netns::{NetnsConfig, NetnsDriver};
use crate::compute::virt::{FakeHypervisor, VirtDriver};
use crate::dataplane::linux::{LinuxConfig, LinuxDataplane, SegmentKind};
use crate::dataplane::{Dataplane, SimDataplane};
use crate::firewall::FirewallPublisher;
use crate::gateway::{Gateway, GatewayArgs, ServerLimits};
use crate::metrics::Metrics;
use crate::network::NetworkManager;
use crate::network::apply::Applier;
use crate::network::vlan::vlans_spec;
use crate::projects::projects_spec;
use crate::scheduler::Scheduler;
use crate::timing::Timing;

pub const STORE_FILE: &str = "nimbus.redb";
pub use crate::app::bootstrap::CLOUDS_YAML;

#[derive(Clone, Debug)]
pub struct CloudConfig {
    pub data_dir: PathBuf,
    /// Where the API listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the Prometheus metrics are served (`GET /metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub fake_hosts: u32,
    pub fake_capacity: Capacity,
    /// The range of the default network of a new cloud (10.0.0.0/24 if `None`). Given for an existing
    /// cloud, it must be what the cloud has: the start is refused otherwise. So are the next three.
    pub fixed_range: Option<Ipv4Network>,
    /// The range of the default floating pool (`public`) of a new cloud (203.0.113.0/24), and its public
    /// interface (eth0).
    pub floating_range: Option<Ipv4Network>,
    pub public_interface: Option<String>,
    /// Give every new instance a floating IP from the default pool (nova's `auto_assign_floating_ip`); it is
    /// released with the instance and not counted against the project's quota.
    pub auto_assign_floating_ip: bool,
    /// The domain instances' names are under (nova's `dhcp_domain`).
    pub dhcp_domain: String,
    /// The admin password of a new cloud (generated if `None`); given for an existing cloud, it must be the
    /// admin's password.
    pub admin_password: Option<String>,
    pub namespace: Namespace,
    pub timing: Timing,
    pub drivers: Drivers,
    /// The API server's connection cap and timeouts.
    pub server_limits: ServerLimits,
}

/// Which dataplane and virt drivers a cloud runs, and their settings.
#[derive(Clone, Debug)]
pub struct Drivers {
    /// `sim` records the kernel state it is asked for; `linux` changes the kernel (root).
    pub dataplane: DataplaneKind,
    /// `fake` runs `fake_hosts` in-memory hosts; `netns` runs this machine as one host (root).
    pub virt: VirtKind,
    /// The network namespace the network host's side lives in (bridges, NAT, dnsmasq, instance ports);
    /// `None` is nimbus's own. A named one keeps a trial cloud, or a test, off the host's real interfaces.
    pub host_netns: Option<String>,
    pub segments: SegmentKind,
    pub vxlan_dev: Option<String>,
    pub vxlan_group: Option<Ipv4Addr>,
    /// `netns` instances are network namespaces named `<prefix><instance id>`.
    pub instance_prefix: String,
    /// `netns` instances run busybox httpd answering with their name.
    pub instance_httpd: bool,
    /// The host name of a `netns` host; this machine's host name if `None`.
    pub host_name: Option<String>,
    /// `fake` hosts follow their security-group firewall as `netns` hosts do, recording it. Off unless asked:
    /// each filtering host has its firewall computed on every change, too much for a benchmark's thousands.
    pub fake_filtering: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataplaneKind {
    Sim,
    Linux,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtKind {
    Fake,
    Netns,
}

impl Default for Drivers {
    fn default() -> Self {
        Drivers {
            dataplane: DataplaneKind::Sim,
            virt: VirtKind::Fake,
            host_netns: None,
            segments: SegmentKind::Vxlan,
            vxlan_dev: None,
            vxlan_group: None,
            instance_prefix: "nimbus-".into(),
            instance_httpd: false,
            host_name: None,
            fake_filtering: false,
        }
    }
}

impl Drivers {
    /// The `linux` dataplane these settings describe, keeping its files under `state_dir`.
    pub async fn linux_dataplane(&self, state_dir: &Path) -> Result<LinuxDataplane, CloudError> {
        LinuxDataplane::start(LinuxConfig {
            netns: self.host_netns.clone(),
            state_dir: state_dir.to_path_buf(),
            segments: self.segments,
            vxlan_dev: self.vxlan_dev.clone(),
            vxlan_group: self.vxlan_group,
        })
        .await
        .map_err(|e| CloudError::Internal(format!("the linux dataplane cannot start: {}", chain(&e))))
    }

    /// The `netns` virt driver these settings describe, keeping its files under `state_dir`.
    pub fn netns_driver(&self, state_dir: &Path, capacity: Capacity) -> Result<NetnsDriver, CloudError> {
        NetnsDriver::new(NetnsConfig {
            host_netns: self.host_netns.clone(),
            prefix: self.instance_prefix.clone(),
            state_dir: state_dir.join("netns"),
            httpd: self.instance_httpd,
            capacity,
        })
        .map_err(|e| CloudError::Internal(format!("the netns virt driver cannot start: {}", chain(&e))))
    }
}

/// This machine's host name, as a compute host is named by default.
pub fn machine_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

impl CloudConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> CloudConfig {
        CloudConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8774)),
            metrics_listen: None,
            fake_hosts: 4,
            fake_capacity: Capacity::default(),
            fixed_range: None,
            floating_range: None,
            public_interface: None,
            auto_assign_floating_ip: false,
            dhcp_domain: crate::names::DEFAULT_DHCP_DOMAIN.to_string(),
            admin_password: None,
            namespace: Namespace::default(),
            timing: Timing::default(),
            drivers: Drivers::default(),
            server_limits: ServerLimits::for_this_process(),
        }
    }
}

/// The root's policy: independent failures of its workers are restarted one by one, and only a storm of them
/// (100 within 10 s, far beyond what backoff lets one crash-looping worker produce) gives the whole cloud up.
/// Crash loops of a single worker escalate in the inner supervisors first.
fn root_args(children: Vec<ChildSpec>) -> SupervisorArgs {
    SupervisorArgs {
        intensity: Intensity { max_restarts: 100, period: Duration::from_secs(10) },
        ..SupervisorArgs::one_for_one(children)
    }
}

/// A running cloud.
pub struct Cloud {
    pub app: App,
    /// The store, for tools and tests that check its invariants; the cloud itself reaches it through `app`.
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub addr: SocketAddr,
    /// Where the Prometheus metrics are served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// `http://addr`, the base of every API URL.
    pub url: String,
    /// The simulated hypervisors, by host, for tests and benchmarks to inspect and to inject failures (none
    /// with the `netns` driver).
    pub hypervisors: BTreeMap<HostId, Arc<FakeHypervisor>>,
    /// The simulated dataplane, for tests to compare with the store (with the `sim` driver).
    pub sim: Option<Arc<SimDataplane>>,
    /// The real dataplane (with the `linux` driver).
    pub linux: Option<Arc<LinuxDataplane>>,
    /// The namespace instances (with the `netns` driver).
    pub netns: Option<Arc<NetnsDriver>>,
    /// The admin password, if it was generated by this start (it is printed once).
    pub generated_admin_password: Option<String>,
    root: ActorRef<SupervisorMsg>,
    root_task: JoinHandle<()>,
}

impl Cloud {
    pub async fn start(config: CloudConfig) -> Result<Cloud, CloudError> {
        // Bind first: a port in use should fail the start before anything is written.
        let bind = |addr: SocketAddr| {
            TcpListener::bind(addr).map_err(|e| CloudError::Internal(format!("cannot listen on {addr}: {e}")))
        };
        let listener = bind(config.listen)?;
        let metrics_listener = config.metrics_listen.map(bind).transpose()?;
        let local =
            |l: &TcpListener| l.local_addr().map_err(|e| CloudError::Internal(format!("listener address: {e}")));
        let addr = local(&listener)?;
        let metrics_addr = metrics_listener.as_ref().map(local).transpose()?;
        let drivers = &config.drivers;
        // Root and the tools first, so a machine that cannot run the real drivers is told before anything
        // is written.
        let mut tools = Vec::new();
        if drivers.dataplane == DataplaneKind::Linux {
            tools.extend(["ip", "nft", "dnsmasq"]);
        }
        if drivers.virt == VirtKind::Netns {
            tools.extend(["ip", "nft", "busybox"]);
        }
        if !tools.is_empty() {
            crate::kernel::check_prerequisites(&tools).map_err(|e| CloudError::Internal(chain(&e)))?;
        }
        let private = |e: std::io::Error| {
            CloudError::Internal(format!("cannot make the data directory {} private: {e}", config.data_dir.display()))
        };
        let state_dir = crate::data_dir::dataplane_dir(&config.data_dir);
        if drivers.dataplane == DataplaneKind::Linux || drivers.virt == VirtKind::Netns {
            // Before the data directory is closed: an older cloud's dataplane files move out of it first.
            crate::data_dir::prepare_dataplane_dir(&config.data_dir).map_err(|e| {
                CloudError::Internal(format!("cannot prepare the dataplane directory {}: {e}", state_dir.display()))
            })?;
        }
        crate::data_dir::make_private(&config.data_dir).map_err(private)?;
        let store = Store::open(config.data_dir.join(STORE_FILE))?;
        // A new store file gets the process's umask; it holds the password hashes.
        crate::data_dir::make_private(&config.data_dir).map_err(private)?;
        let app =
            App::new(store.clone(), config.namespace.clone(), config.timing.clone(), config.auto_assign_floating_ip)
                .with_images_dir(config.data_dir.join("images"))
                .with_dhcp_domain(config.dhcp_domain.clone());
        let metrics = Arc::new(
            Metrics::new(app.clone(), &store)
                .map_err(|e| CloudError::Internal(format!("the metrics cannot be set up: {}", chain(&e))))?,
        );
        let defaults = bootstrap::Defaults {
            admin_password: config.admin_password.clone(),
            fixed_range: config.fixed_range,
            floating_range: config.floating_range,
            public_interface: config.public_interface.clone(),
        };
        let bootstrapped = bootstrap::ensure_defaults(&app, &config.data_dir, &defaults).await?;
        let url = format!("http://{addr}");
        let clouds_yaml = config.data_dir.join(CLOUDS_YAML);
        match &bootstrapped.working_password {
            Some(password) => bootstrap::write_private(&clouds_yaml, &bootstrap::clouds_yaml(&url, password))
                .map_err(bootstrap::cannot_write(&clouds_yaml))?,
            None => {
                // A clouds.yaml with a password that no longer works would only mislead.
                let _ = std::fs::remove_file(&clouds_yaml);
                tracing::warn!(
                    "nimbus knows no working admin password (it was given at creation, or changed through the \
                     API since), so {CLOUDS_YAML} is not written; start with NIMBUS_ADMIN_PASSWORD set to the \
                     admin's password to have it written"
                );
            }
        }

        let (sim, linux, dataplane): (_, _, Arc<dyn Dataplane>) = match drivers.dataplane {
            DataplaneKind::Sim => {
                let sim = Arc::new(SimDataplane::new());
                (Some(sim.clone()), None, sim)
            }
            DataplaneKind::Linux => {
                let linux = Arc::new(drivers.linux_dataplane(&state_dir).await?);
                (None, Some(linux.clone()), linux)
            }
        };
        let applier = Applier::new(app.clone(), dataplane);
        let ns = &config.namespace;
        let (hypervisors, netns, hosts): (_, _, Vec<(HostId, Arc<dyn VirtDriver>)>) = match drivers.virt {
            VirtKind::Fake => {
                let fakes: BTreeMap<HostId, Arc<FakeHypervisor>> = (1..=config.fake_hosts)
                    .map(|n| {
                        let fake = if drivers.fake_filtering {
                            FakeHypervisor::filtering(config.fake_capacity)
                        } else {
                            FakeHypervisor::new(config.fake_capacity)
                        };
                        (HostId(format!("host-{n:04}")), Arc::new(fake))
                    })
                    .collect();
                let hosts = fakes.iter().map(|(h, f)| (h.clone(), f.clone() as Arc<dyn VirtDriver>)).collect();
                (fakes, None, hosts)
            }
            VirtKind::Netns => {
                let driver = Arc::new(drivers.netns_driver(&state_dir, config.fake_capacity)?);
                let host = HostId(drivers.host_name.clone().unwrap_or_else(machine_host_name));
                (BTreeMap::new(), Some(driver.clone()), vec![(host, driver as Arc<dyn VirtDriver>)])
            }
        };
        let agents = NodeAgents {
            node: "local".into(),
            node_address: None,
            ns: ns.clone(),
            timing: config.timing.clone(),
            host_ip: Ipv4Addr::LOCALHOST,
        };
        let listener = Arc::new(listener);
        let metrics_listener = metrics_listener.map(Arc::new);
        let metadata_listener =
            match &linux {
                Some(linux) => Some(Arc::new(linux.metadata_listener().await.map_err(|e| {
                    CloudError::Internal(format!("the metadata service cannot listen: {}", chain(&e)))
                })?)),
                None => None,
            };
        let children = vec![
            {
                let app = app.clone();
                ChildSpec::new(ns.actor_name("scheduler"), move || (Scheduler, app.clone()))
            },
            {
                let app = app.clone();
                ChildSpec::new(ns.actor_name("firewall"), move || (FirewallPublisher, app.clone()))
            },
            {
                let applier = applier.clone();
                ChildSpec::new(ns.actor_name("network"), move || (NetworkManager, applier.clone()))
            },
            vlans_spec(&applier),
            {
                let hosts = hosts.clone();
                ChildSpec::new(ns.actor_name("compute"), move || (Supervisor, agents.supervisor(&hosts)))
            },
            projects_spec(&app),
            {
                let (app, url, metrics, limits) =
                    (app.clone(), url.clone(), metrics.clone(), config.server_limits.clone());
                ChildSpec::new(ns.actor_name("gateway"), move || {
                    let args = GatewayArgs {
                        app: app.clone(),
                        listener: listener.clone(),
                        metrics_listener: metrics_listener.clone(),
                        metadata_listener: metadata_listener.clone(),
                        metrics: metrics.clone(),
                        base_url: url.clone(),
                        limits: limits.clone(),
                    };
                    (Gateway, args)
                })
            },
        ];
        let (root, root_task) = Actor::spawn(Some(ns.actor_name("cloud")), Supervisor, root_args(children))
            .await
            .map_err(|e| CloudError::Internal(format!("the cloud's actors did not start: {e}")))?;
        tracing::info!(%url, hosts = hosts.len(), data = %config.data_dir.display(), "nimbus is up");
        Ok(Cloud {
            app,
            store,
            metrics,
            addr,
            metrics_addr,
            url,
            hypervisors,
            sim,
            linux,
            netns,
            generated_admin_password: bootstrapped.generated_password,
            root,
            root_task,
        })
    }

    /// The simulated dataplane; only for clouds started with it.
    pub fn sim(&self) -> &SimDataplane {
        self.sim.as_deref().expect("this cloud runs the sim dataplane")
    }

    /// The root supervisor, for introspection.
    pub fn root(&self) -> &ActorRef<SupervisorMsg> {
        &self.root
    }

    /// Ends when the root supervisor stops, which happens only if restarts escalated all the way up.
    pub async fn failed(&mut self) {
        let _ = (&mut self.root_task).await;
    }

    /// Stops every actor (last started first), then the store, and lets its file go once the last task
    /// holding it has ended (a host record's refresh may still be waiting for its commit).
    pub async fn shutdown(self) {
        let Cloud { root, store, app, metrics, .. } = self;
        let _ = root.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
        drop((app, metrics));
        if !store.close_and_release(Duration::from_secs(5)).await {
            tracing::warn!(
                "tasks still hold the store 5 s after the shutdown; the data file is released when they end"
            );
        }
    }
}
