//! The options several commands share: how to reach a cloud's API and log in, where a controller keeps its
//! state and what a new cloud is created with, and which drivers a node runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use nimbus_actors::app::bootstrap::ADMIN_PASSWORD_FILE;
use nimbus_actors::cloud::{CloudConfig, DataplaneKind, Drivers, VirtKind};
use nimbus_actors::dataplane::linux::SegmentKind;

use crate::client::Client;

/// Which dataplane and virt drivers to run.
#[derive(Args, Debug, Clone)]
pub struct DriverArgs {
    /// `sim` records the networking it would do; `linux` does it: bridges, VXLAN, dnsmasq, nftables (root).
    #[arg(long, value_enum, default_value_t = DataplaneArg::Sim)]
    pub dataplane: DataplaneArg,
    /// `fake` simulates --fake-hosts hosts in memory; `netns` runs instances as network namespaces on this
    /// machine (root).
    #[arg(long, value_enum, default_value_t = VirtArg::Fake)]
    pub virt: VirtArg,
    /// Keep the network host's side (bridges, NAT, dnsmasq, instance ports) in this network namespace
    /// instead of the machine's own: a safe way to try the linux dataplane. Created if missing.
    #[arg(long)]
    pub host_netns: Option<String>,
    /// How VLAN-mode networks are segmented: a VXLAN per project, or 802.1Q links (needs the 8021q module).
    #[arg(long, value_enum, default_value_t = SegmentsArg::Vxlan)]
    pub segments: SegmentsArg,
    /// VXLAN: the underlay device towards the other hosts.
    #[arg(long)]
    pub vxlan_dev: Option<String>,
    /// VXLAN: the multicast group that reaches the other hosts of a segment.
    #[arg(long)]
    pub vxlan_group: Option<std::net::Ipv4Addr>,
    /// netns: run busybox httpd in every instance, answering with its name (for reachability checks).
    #[arg(long)]
    pub instance_httpd: bool,
    /// netns: the prefix of instance namespace names.
    #[arg(long, default_value = "nimbus-")]
    pub instance_prefix: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataplaneArg {
    Sim,
    Linux,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtArg {
    Fake,
    Netns,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentsArg {
    Vxlan,
    Vlan,
}

impl DriverArgs {
    /// The drivers these options describe; creates the host namespace if one is named and missing.
    pub async fn drivers(&self) -> anyhow::Result<Drivers> {
        if let Some(netns) = &self.host_netns {
            nimbus_actors::kernel::process::ensure_namespace(netns)
                .await
                .with_context(|| format!("creating the network namespace {netns} (are you root?)"))?;
        }
        Ok(Drivers {
            dataplane: match self.dataplane {
                DataplaneArg::Sim => DataplaneKind::Sim,
                DataplaneArg::Linux => DataplaneKind::Linux,
            },
            virt: match self.virt {
                VirtArg::Fake => VirtKind::Fake,
                VirtArg::Netns => VirtKind::Netns,
            },
            host_netns: self.host_netns.clone(),
            segments: match self.segments {
                SegmentsArg::Vxlan => SegmentKind::Vxlan,
                SegmentsArg::Vlan => SegmentKind::Vlan,
            },
            vxlan_dev: self.vxlan_dev.clone(),
            vxlan_group: self.vxlan_group,
            instance_prefix: self.instance_prefix.clone(),
            instance_httpd: self.instance_httpd,
            host_name: None,
            fake_filtering: false,
        })
    }
}

/// Where a controller keeps its state and serves its API, and what a new cloud is created with.
#[derive(Args, Debug)]
pub struct CloudArgs {
    /// Where the cloud keeps its state (created if missing).
    #[arg(long, default_value = "./nimbus-data")]
    pub data_dir: PathBuf,
    /// Address of the API listener.
    #[arg(long, default_value = "127.0.0.1:8774")]
    pub listen: SocketAddr,
    /// The range of the default network `private` of a new cloud [default: 10.0.0.0/24]. For an existing
    /// cloud it must be the one it has (the start is refused otherwise); so must the next three.
    #[arg(long)]
    pub fixed_range: Option<ipnetwork::Ipv4Network>,
    /// The range of the floating pool `public` of a new cloud [default: 203.0.113.0/24].
    #[arg(long)]
    pub floating_range: Option<ipnetwork::Ipv4Network>,
    /// The public interface the addresses of the pool `public` are bound to [default: eth0].
    #[arg(long)]
    pub public_interface: Option<String>,
    /// Give every new instance a floating IP from the default pool, not counted against the quota; it stays
    /// with the instance (it cannot be disassociated or released) and goes back to the pool when it is deleted.
    #[arg(long)]
    pub auto_assign_floating_ip: bool,
    /// The DNS domain instances' names are under (nova's `dhcp_domain`): `vm1.<domain>`, served by each DHCP
    /// network's dnsmasq and given by the metadata service.
    #[arg(long, default_value = "novalocal", value_parser = dns_domain)]
    pub dhcp_domain: String,
    /// Serve the Prometheus metrics (`GET /metrics`, no token needed) on this address; off when not given.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// The admin password of a new cloud (generated if not given). For an existing cloud it must be the
    /// admin's password; `clouds.yaml` is written with it.
    #[arg(long, env = "NIMBUS_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
}

impl CloudArgs {
    /// The cloud configuration these options describe.
    pub fn config(&self) -> CloudConfig {
        let mut config = CloudConfig::new(&self.data_dir);
        config.listen = self.listen;
        config.admin_password = self.admin_password.clone();
        config.fixed_range = self.fixed_range;
        config.auto_assign_floating_ip = self.auto_assign_floating_ip;
        config.dhcp_domain = self.dhcp_domain.clone();
        config.floating_range = self.floating_range;
        config.public_interface = self.public_interface.clone();
        config.metrics_listen = self.metrics_listen;
        config
    }
}

/// `--dhcp-domain`'s check.
fn dns_domain(text: &str) -> Result<String, String> {
    match nimbus_actors::names::domain_problem(text) {
        Some(problem) => Err(problem),
        None => Ok(text.to_string()),
    }
}

/// How the admin subcommands reach and log in to the cloud.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The cloud's API.
    #[arg(long, env = "NIMBUS_URL", default_value = "http://127.0.0.1:8774")]
    pub url: String,
    #[arg(long, env = "NIMBUS_USER", default_value = "admin")]
    pub user: String,
    /// Defaults to the password `nimbus up` generated into the data directory.
    #[arg(long, env = "NIMBUS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// The project to log in to.
    #[arg(long = "os-project", env = "NIMBUS_PROJECT", default_value = "admin")]
    pub login_project: String,
    /// The data directory of a local `nimbus up`, to read the generated admin password from.
    #[arg(long, default_value = "./nimbus-data")]
    pub data_dir: PathBuf,
}

impl ApiArgs {
    pub async fn login(&self) -> anyhow::Result<Client> {
        let password = match &self.password {
            Some(p) => p.clone(),
            None => read_password(&self.data_dir)?,
        };
        Ok(Client::login(&self.url, &self.user, &password, &self.login_project).await?)
    }
}

fn read_password(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(ADMIN_PASSWORD_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("no --password given and cannot read {}; pass --password or set NIMBUS_PASSWORD", path.display())
    })?;
    Ok(text.trim().to_string())
}
