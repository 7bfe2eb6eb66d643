//! The command line: `nimbus up`, the admin subcommands, and `nimbus bench`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use nimbus_actors::app::bootstrap::ADMIN_PASSWORD_FILE;
use nimbus_actors::cloud::{CLOUDS_YAML, Cloud};
use serde_json::json;

use crate::args::{ApiArgs, CloudArgs, DriverArgs};
use crate::bench;
use crate::output::{print_table, text};

#[derive(Parser, Debug)]
#[command(
    name = "nimbus",
    version,
    about = "A cloud controller in the shape of OpenStack Nova with nova-network, as an actor system"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a whole cloud in this process: API, scheduler, network manager, and fake compute hosts.
    Up(UpArgs),
    /// Run one node of a multi-process cloud (controller, compute, or both).
    Node(crate::node::NodeArgs),
    /// The cluster's nodes and hosts.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Manage projects (admin).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Manage users (admin).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage fixed networks (admin), as `nova-manage network`.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage floating IP pools (admin), as `nova-manage floating`.
    #[command(subcommand)]
    Floating(FloatingCommand),
    /// Reserve or unreserve fixed IPs (admin), as `nova-manage fixed`.
    #[command(subcommand)]
    Fixed(FixedCommand),
    /// The interactive debug console: the live actor tree, details, events, kill.
    Console {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Debug the running actor system: list, kill, stop actors; follow supervision events.
    #[command(subcommand)]
    Actors(crate::actors::ActorsCommand),
    /// Measure nimbus.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many simulated compute hosts to run.
    #[arg(long, default_value_t = 4)]
    pub fake_hosts: u32,
    #[command(flatten)]
    pub cloud: CloudArgs,
    #[command(flatten)]
    pub drivers: DriverArgs,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Nodes, roles, addresses, last report and state of every compute host.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make a certificate authority (once) and certificates for the named nodes, for `nimbus node --tls-dir`.
    Certs {
        /// Where to write them (the CA there is reused when it exists).
        #[arg(long, default_value = "./nimbus-certs")]
        dir: PathBuf,
        /// A node name (repeat); each gets `<name>.pem` and `<name>.key`.
        #[arg(long = "node", required = true)]
        nodes: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// How the project's instances are networked: flat, flat_dhcp or vlan.
        #[arg(long, default_value = "flat")]
        network_mode: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List projects.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user, optionally with a role on a project.
    Create {
        name: String,
        /// The new user's password.
        #[arg(long = "user-password")]
        user_password: String,
        /// Give the user a role on this project (name or id); it also becomes the default project.
        #[arg(long)]
        project: Option<String>,
        /// The role on --project: admin, member or reader.
        #[arg(long, default_value = "member", requires = "project")]
        role: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create networks: the range is cut into --num-networks networks of --network-size addresses.
    Create(Box<NetworkCreate>),
    /// List networks.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a network no instance uses.
    Delete {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args, Debug)]
pub struct NetworkCreate {
    /// The network's label (networks after the first get `_1`, `_2`, … appended).
    pub label: String,
    /// The range to carve, e.g. 10.1.0.0/16.
    #[arg(long = "fixed-range-v4", alias = "cidr")]
    pub cidr: String,
    /// flat, flat_dhcp or vlan.
    #[arg(long, default_value = "flat")]
    pub mode: String,
    #[arg(long)]
    pub num_networks: Option<u32>,
    #[arg(long)]
    pub network_size: Option<u32>,
    /// VLAN mode: the first segment id.
    #[arg(long)]
    pub vlan_start: Option<u32>,
    /// VLAN mode: the first VPN port.
    #[arg(long)]
    pub vpn_start: Option<u32>,
    #[arg(long)]
    pub gateway: Option<String>,
    #[arg(long)]
    pub bridge: Option<String>,
    #[arg(long)]
    pub bridge_interface: Option<String>,
    #[arg(long)]
    pub dns1: Option<String>,
    #[arg(long)]
    pub dns2: Option<String>,
    #[arg(long)]
    pub multi_host: bool,
    #[arg(long)]
    pub allowed_start: Option<String>,
    #[arg(long)]
    pub allowed_end: Option<String>,
    /// Bind the network to this project (name or id) now.
    #[arg(long = "project-id")]
    pub project: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Subcommand, Debug)]
pub enum FloatingCommand {
    /// Create a pool of floating addresses.
    Create {
        /// The addresses, e.g. 203.0.113.0/24.
        #[arg(long)]
        ip_range: String,
        #[arg(long, default_value = "nova")]
        pool: String,
        /// The public interface the addresses are bound to.
        #[arg(long, default_value = "eth0")]
        interface: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum FixedCommand {
    /// Keep an address from being handed out.
    Reserve {
        address: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Let a reserved address be handed out again.
    Unreserve {
        address: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

async fn network_command(command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create(n) => {
            let client = n.api.login().await?;
            let body = json!({"network": {
                "label": n.label, "cidr": n.cidr, "mode": n.mode, "num_networks": n.num_networks,
                "network_size": n.network_size, "vlan_start": n.vlan_start, "vpn_start": n.vpn_start,
                "gateway": n.gateway, "bridge": n.bridge, "bridge_interface": n.bridge_interface,
                "dns1": n.dns1, "dns2": n.dns2, "multi_host": n.multi_host, "allowed_start": n.allowed_start,
                "allowed_end": n.allowed_end, "project_id": n.project,
            }});
            let created = client.post("/compute/v2.1/os-networks", &body).await?;
            print_table(&created["networks"], &["id", "label", "cidr", "mode", "bridge", "vlan"]);
            Ok(())
        }
        NetworkCommand::List { api } => {
            let client = api.login().await?;
            let listed = client.get("/compute/v2.1/os-networks").await?;
            print_table(&listed["networks"], &["id", "label", "cidr", "mode", "bridge", "vlan", "project_id"]);
            Ok(())
        }
        NetworkCommand::Delete { id, api } => {
            let client = api.login().await?;
            client.delete(&format!("/compute/v2.1/os-networks/{id}")).await?;
            println!("deleted network {id}");
            Ok(())
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            serving_process();
            up(args).await
        }
        Command::Node(args) => {
            serving_process();
            crate::node::run(args).await
        }
        Command::Cluster(ClusterCommand::Certs { dir, nodes }) => {
            crate::tls::make_certs(&dir, &nodes)?;
            println!("wrote ca.pem and certificates for {} into {}", nodes.join(", "), dir.display());
            Ok(())
        }
        Command::Cluster(ClusterCommand::Status { api }) => {
            let client = api.login().await?;
            let status = client.get("/admin/cluster").await?;
            let c = &status["controller"];
            println!("controller: {} (API {}), {}", text(&c["node"]), text(&c["api"]), text(&c["state"]));
            print_table(&status["hosts"], &["host", "node", "role", "address", "last_report", "state", "instances"]);
            for w in status["warnings"].as_array().into_iter().flatten() {
                println!("warning: {}", text(w));
            }
            println!("({})", text(&status["source"]));
            Ok(())
        }
        Command::Project(ProjectCommand::Create { name, description, network_mode, api }) => {
            let client = api.login().await?;
            let project = json!({"project": {"name": name, "description": description, "network_mode": network_mode}});
            let created = client.post("/identity/v3/projects", &project).await?;
            println!(
                "created project {} ({})",
                created["project"]["name"].as_str().unwrap_or("?"),
                created["project"]["id"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Project(ProjectCommand::List { api }) => {
            let client = api.login().await?;
            let listed = client.get("/identity/v3/projects").await?;
            print_table(&listed["projects"], &["id", "name", "description"]);
            Ok(())
        }
        Command::User(UserCommand::Create { name, user_password, project, role, api }) => {
            let client = api.login().await?;
            let mut user = json!({"name": name, "password": user_password});
            if let Some(project) = &project {
                user["default_project_id"] = json!(project);
            }
            let created = client.post("/identity/v3/users", &json!({"user": user})).await?;
            let id = created["user"]["id"].as_str().unwrap_or_default().to_string();
            println!("created user {name} ({id})");
            if let Some(project) = project {
                let path = format!("/identity/v3/projects/{project}/users/{id}/roles/{role}");
                client.send(reqwest::Method::PUT, &path, None).await?;
                println!("granted {role} on {project} to {name}");
            }
            Ok(())
        }
        Command::User(UserCommand::List { api }) => {
            let client = api.login().await?;
            let listed = client.get("/identity/v3/users").await?;
            print_table(&listed["users"], &["id", "name", "default_project_id"]);
            Ok(())
        }
        Command::Network(command) => network_command(command).await,
        Command::Floating(FloatingCommand::Create { ip_range, pool, interface, api }) => {
            let client = api.login().await?;
            let body =
                json!({"floating_ips_bulk_create": {"ip_range": ip_range, "pool": pool, "interface": interface}});
            let created = client.post("/compute/v2.1/os-floating-ips-bulk", &body).await?;
            let c = &created["floating_ips_bulk_create"];
            println!(
                "created floating pool {} ({} on {})",
                text(&c["pool"]),
                text(&c["ip_range"]),
                text(&c["interface"])
            );
            Ok(())
        }
        Command::Fixed(command) => {
            let (address, action, api) = match command {
                FixedCommand::Reserve { address, api } => (address, "reserve", api),
                FixedCommand::Unreserve { address, api } => (address, "unreserve", api),
            };
            let client = api.login().await?;
            client.post(&format!("/compute/v2.1/os-fixed-ips/{address}/action"), &json!({action: null})).await?;
            println!("{action}d {address}");
            Ok(())
        }
        Command::Actors(command) => crate::actors::run(command).await,
        Command::Console { api } => crate::console::run(api).await,
        Command::Bench(command) => bench::run(command).await,
    }
}

/// What a process that serves a cloud sets first: it may hold as many connections as the system lets it
/// (the API's connection cap is sized from that).
fn serving_process() {
    if let Err(e) = nimbus_actors::gateway::server::raise_open_file_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit; the API's connection cap stays low");
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut config = args.cloud.config();
    config.fake_hosts = args.fake_hosts;
    config.drivers = args.drivers.drivers().await?;
    let mut cloud = Cloud::start(config).await.context("starting the cloud")?;
    let data = args.cloud.data_dir.display();
    println!("nimbus is up at {}", cloud.url);
    println!("  data directory: {data}");
    match &cloud.netns {
        Some(_) => println!("  compute hosts:  1 (netns instances on this machine)"),
        None => println!("  compute hosts:  {} (fake)", args.fake_hosts),
    }
    match (&cloud.linux, &args.drivers.host_netns) {
        (Some(_), Some(netns)) => println!("  dataplane:      linux, in network namespace {netns}"),
        (Some(_), None) => println!("  dataplane:      linux"),
        (None, _) => println!("  dataplane:      sim (nothing is changed in the kernel)"),
    }
    if let Some(password) = &cloud.generated_admin_password {
        println!("  admin password: {password}  (generated; also in {data}/{ADMIN_PASSWORD_FILE})");
    }
    if args.cloud.data_dir.join(CLOUDS_YAML).exists() {
        println!();
        println!("Use it with the OpenStack CLI:");
        println!("  export OS_CLIENT_CONFIG_FILE={data}/{CLOUDS_YAML} OS_CLOUD=nimbus");
        println!("  openstack server create --image cirros-0.6.2-x86_64-disk --flavor m1.tiny --wait vm1");
    }
    println!();
    println!("Stop with Ctrl-C (or SIGTERM); state is kept in {data}.");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let reason = tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupt",
        _ = terminate.recv() => "terminate signal",
        _ = cloud.failed() => {
            bail!("the cloud's supervision tree gave up after repeated failures; see the log above");
        }
    };
    tracing::info!(reason, "stopping");
    cloud.shutdown().await;
    println!("nimbus stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
