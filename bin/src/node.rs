//! `nimbus node`: one node of a multi-process cloud. A controller runs the store, the API and the workers
//! that need the store; a compute node runs compute agents for its host and joins a controller over
//! ractor_cluster (cookie-authenticated, listening on the configured address only). Topics are process
//! groups, so the controller's conductors reach `compute.<host>` on whichever node runs it. Every link is
//! mutual TLS with the cluster's own certificate authority (`--tls-dir`, see [`crate::tls`]) unless the
//! operator asks for `--insecure-plaintext`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use nimbus_actors::cloud::{Cloud, DataplaneKind, Drivers, VirtKind};
use nimbus_actors::compute::NodeAgents;
use nimbus_actors::compute::plumbing::PlumbedDriver;
use nimbus_actors::compute::virt::{FakeHypervisor, VirtDriver};
use nimbus_actors::timing::Timing;
use nimbus_protocol::compute::Capacity;
use nimbus_protocol::ids::HostId;
use nimbus_protocol::scheduler;
use nimbus_runtime::{Namespace, Supervisor};
use ractor::Actor;
use ractor_cluster::NodeServer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Controller,
    Compute,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// What this node runs; repeat for several.
    #[arg(long = "role", required = true)]
    pub roles: Vec<Role>,
    /// This node's name in the cluster.
    #[arg(long)]
    pub name: Option<String>,
    /// Where this node listens for other nodes (the port may be 0).
    #[arg(long, default_value = "127.0.0.1:4370")]
    pub cluster_listen: SocketAddr,
    /// A controller to join (compute nodes).
    #[arg(long)]
    pub join: Option<SocketAddr>,
    /// The shared secret of the cluster, in a file; or set NIMBUS_COOKIE.
    #[arg(long)]
    pub cookie_file: Option<PathBuf>,
    /// Compute: the host this node runs instances for.
    #[arg(long)]
    pub host: Option<String>,
    /// Encrypt and authenticate node links with the certificates in this directory (`ca.pem`, and
    /// `<name>.pem` / `<name>.key` for this node's `--name`), as made by `nimbus cluster certs`.
    #[arg(long, requires = "name")]
    pub tls_dir: Option<PathBuf>,
    /// Let node links travel unencrypted (the cookie still authenticates them, but anyone on the path reads
    /// and can hijack them): only on loopback or a network nobody else is on.
    #[arg(long, conflicts_with = "tls_dir")]
    pub insecure_plaintext: bool,
    /// Controller: where it keeps its state, serves its API, and what a new cloud is created with.
    #[command(flatten)]
    pub cloud: crate::args::CloudArgs,
    /// The drivers: a controller uses the dataplane (it is the network host); a compute node its virt
    /// driver, and with `--dataplane linux` it ensures its own side of each network (multi_host).
    #[command(flatten)]
    pub drivers: crate::args::DriverArgs,
    /// How often compute agents report in, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub report_interval_ms: u64,
    /// Controller: a host that has not reported for this many milliseconds is down (Nova's
    /// `service_down_time`, 60 s).
    #[arg(long, default_value_t = 60_000)]
    pub service_down_after_ms: u64,
}

fn cookie(args: &NodeArgs) -> anyhow::Result<String> {
    let cookie = match &args.cookie_file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading the cookie file {}", path.display()))?
        }
        None => {
            std::env::var("NIMBUS_COOKIE").context("a cluster cookie is required: --cookie-file or NIMBUS_COOKIE")?
        }
    };
    let cookie = cookie.trim().to_string();
    if cookie.len() < 16 {
        bail!("the cluster cookie must be at least 16 characters");
    }
    Ok(cookie)
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let cookie = cookie(&args)?;
    let timing = Timing {
        report_interval: Duration::from_millis(args.report_interval_ms),
        service_down_after: Duration::from_millis(args.service_down_after_ms),
        ..Timing::default()
    };
    let controller = args.roles.contains(&Role::Controller);
    let compute = args.roles.contains(&Role::Compute);
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| if controller { "controller".into() } else { format!("compute-{}", std::process::id()) });

    let (incoming, transport) = match &args.tls_dir {
        Some(dir) => {
            let acceptor = crate::tls::acceptor(dir, &name)?;
            let (connector, server_name) = crate::tls::connector(dir, &name)?;
            (Some(ractor_cluster::IncomingEncryptionMode::Tls(acceptor)), Transport::Tls(connector, server_name))
        }
        None if args.insecure_plaintext => {
            tracing::warn!("node links are unencrypted (--insecure-plaintext)");
            (None, Transport::Plain)
        }
        None => bail!(
            "node links are encrypted by default: give --name and --tls-dir DIR with this cluster's certificates \
             (make them once with `nimbus cluster certs --dir DIR --node <name> ...`), or --insecure-plaintext to \
             run without encryption on a network nobody else is on"
        ),
    };
    let server = NodeServer::new(args.cluster_listen.port(), cookie, name.clone(), "localhost".into(), incoming, None)
        .with_listen_addr(args.cluster_listen.ip());
    let (node, _) =
        Actor::spawn(Some(format!("node/{name}")), server, ()).await.context("starting the cluster listener")?;

    let drivers = args.drivers.drivers().await?;
    if controller && !compute && drivers.virt != VirtKind::Fake {
        bail!("a controller runs no instances: --virt is for compute nodes");
    }
    let cloud = if controller {
        let mut config = args.cloud.config();
        config.fake_hosts = 0;
        config.timing = timing.clone();
        config.drivers = Drivers { virt: VirtKind::Fake, ..drivers.clone() };
        let cloud = Cloud::start(config).await.context("starting the controller")?;
        println!("controller {name} is up: API at {}, cluster on {}", cloud.url, args.cluster_listen);
        Some(cloud)
    } else {
        None
    };
    let agents = if compute {
        let host = HostId(args.host.clone().context("a compute node needs --host")?);
        if let Some(join) = args.join {
            connect(&node, join, &transport).await?;
            tokio::spawn(stay_joined(node.clone(), join, transport));
        }
        let state_dir = nimbus_actors::data_dir::prepare_dataplane_dir(&args.cloud.data_dir)
            .with_context(|| format!("preparing the dataplane directory of {}", args.cloud.data_dir.display()))?;
        let virt: Arc<dyn VirtDriver> = match drivers.virt {
            VirtKind::Fake => Arc::new(FakeHypervisor::new(Capacity::default())),
            VirtKind::Netns => Arc::new(drivers.netns_driver(&state_dir, Capacity::default())?),
        };
        let hypervisor: Arc<dyn VirtDriver> = match drivers.dataplane {
            DataplaneKind::Linux => {
                let dataplane = Arc::new(drivers.linux_dataplane(&state_dir).await?);
                Arc::new(PlumbedDriver { dataplane, inner: virt })
            }
            DataplaneKind::Sim => virt,
        };
        let agents = NodeAgents {
            node: name.clone(),
            node_address: Some(args.cluster_listen.to_string()),
            ns: Namespace::default(),
            timing: timing.clone(),
            host_ip: std::net::Ipv4Addr::LOCALHOST,
        };
        let (agents, _) =
            Actor::spawn(Some("compute".into()), Supervisor, agents.supervisor(&[(host.clone(), hypervisor)]))
                .await
                .context("starting the compute agent")?;
        println!("compute node {name} is up for host {host}");
        Some(agents)
    } else {
        None
    };

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    if let Some(agents) = agents {
        let _ = agents.stop_and_wait(None, Some(Duration::from_secs(5))).await;
    }
    if let Some(cloud) = cloud {
        cloud.shutdown().await;
    }
    println!("node {name} stopped.");
    Ok(())
}

/// ractor_cluster does not reconnect: when the controller goes away (a restart), its workers leave the
/// process groups; join again then, with backoff, so the agents' reports reach it and re-register the host.
async fn stay_joined(
    node: ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    join: SocketAddr,
    transport: Transport,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::time::sleep(delay).await;
        if joined() {
            delay = Duration::from_millis(500);
            continue;
        }
        match join_once(&node, join, &transport).await {
            Ok(()) => tracing::info!(%join, "joined the controller again"),
            Err(e) => tracing::warn!(%join, cause = %e, "not joined; retrying"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Whether a controller's scheduler is in reach: the compute node has joined it.
fn joined() -> bool {
    !Namespace::default().members(&scheduler::TOPIC).is_empty()
}

/// Connects and waits for the controller's workers to appear. A TCP connection is not a join: the session
/// authenticates afterwards, and a wrong cookie closes it without an error on this side.
async fn join_once(
    node: &ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    join: SocketAddr,
    transport: &Transport,
) -> Result<(), JoinError> {
    let connected = match transport {
        Transport::Plain => ractor_cluster::client_connect(node, join).await,
        Transport::Tls(connector, name) => {
            ractor_cluster::client_connect_enc(node, join, connector.clone(), name.clone()).await
        }
    };
    connected.map_err(|e| JoinError::Unreachable(format!("cannot connect: {e}")))?;
    for _ in 0..20 {
        if joined() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(JoinError::Refused(format!(
        "{join} accepted the connection but not this node: the cluster cookie is probably wrong, or TLS is set up on one side only (or it runs no controller)"
    )))
}

/// How this node reaches others: plain TCP, or mutual TLS with the cluster's certificates.
#[derive(Clone)]
enum Transport {
    Plain,
    Tls(tokio_rustls::TlsConnector, tokio_rustls::rustls::pki_types::ServerName<'static>),
}

#[derive(Debug)]
enum JoinError {
    Unreachable(String),
    Refused(String),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Unreachable(e) | JoinError::Refused(e) => f.write_str(e),
        }
    }
}

/// Joins the controller: retries with backoff while it does not answer (it may still be starting), for about
/// a minute; gives up at once if it answers but refuses this node three times (a wrong cookie).
async fn connect(
    node: &ractor::ActorRef<ractor_cluster::NodeServerMessage>,
    join: SocketAddr,
    transport: &Transport,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(100);
    let (mut refused, mut last) = (0, String::new());
    for _ in 0..20 {
        match join_once(node, join, transport).await {
            Ok(()) => return Ok(()),
            Err(JoinError::Unreachable(e)) => {
                tracing::warn!(%join, cause = %e, "the controller does not answer yet; retrying");
                last = e;
            }
            Err(JoinError::Refused(e)) => {
                refused += 1;
                if refused == 3 {
                    bail!("could not join the controller at {join}: {e}");
                }
                last = e;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    bail!("could not join the controller at {join}: {last}")
}
