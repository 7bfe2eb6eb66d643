//! Fixed networks, as `nova-manage network` had them: created by carving an operator's range
//! ([`crate::network_plan`]), deleted when no instance uses them, bound to and unbound from projects, and who
//! sees which. The Network API makes them in two steps: a bare network, then its one subnet (its range).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use nimbus_protocol::ids::{NetworkId, ProjectId};
use nimbus_protocol::network::NetworkChanges;
use nimbus_protocol::trace::Trace;
use nimbus_storage::records::{BareNetwork, Network, NetworkMode, Role, now_ms};
use nimbus_storage::schema::{self, ALLOCATION_CURSORS, BARE_NETWORKS, FIXED_IPS, NETWORKS, PROJECTS};
use nimbus_storage::{Pair, Reads, StoreError, WriteTx};

use crate::app::App;
use crate::app::dataplane_state::{changes_of, owned_by_network_manager};
use crate::app::error::CloudError;
use crate::app::fixed_ips::free_fixed_ip_in;
use crate::app::identity::{self, AuthContext};
use crate::network_plan::{self, NetworkRequest, PlanError};

/// Whether the caller sees network `n`: an admin every one; others the shared networks of the flat modes and
/// their project's own.
pub fn visible(auth: &AuthContext, n: &Network) -> bool {
    auth.has(Role::Admin) || n.project == Some(auth.project) || (n.project.is_none() && n.mode != NetworkMode::Vlan)
}

/// The networks the caller sees, oldest first.
pub fn list(app: &App, auth: &AuthContext) -> Result<Vec<Network>, StoreError> {
    let mut networks: Vec<Network> =
        app.store.read(|r| r.scan(&NETWORKS))?.into_iter().map(|(_, n)| n).filter(|n| visible(auth, n)).collect();
    networks.sort_by_key(|n| (n.created_at, u32::from(n.cidr.network())));
    Ok(networks)
}

/// A network the caller sees, by id; anything else is "not found".
pub fn get(app: &App, auth: &AuthContext, id: &str) -> Result<Network, CloudError> {
    let missing = || CloudError::NotFound(format!("Network {id} could not be found."));
    let parsed: NetworkId = id.parse().map_err(|_| missing())?;
    let network = app.store.read(|r| r.get(&NETWORKS, &parsed))?;
    network.filter(|n| visible(auth, n)).ok_or_else(missing)
}

/// Creates the networks `request` describes, bound to `project` (by name or id) if one is named.
pub async fn create(
    app: &App,
    trace: &Trace,
    mut request: NetworkRequest,
    project: Option<&str>,
) -> Result<Vec<Network>, CloudError> {
    request.project = project.map(|p| identity::named_project(app, p)).transpose()?;
    let created = app
        .store
        .write(move |tx| {
            let existing: Vec<Network> = tx.scan(&NETWORKS)?.into_iter().map(|(_, n)| n).collect();
            let planned = network_plan::plan(&request, &existing, now_ms()).map_err(plan_error)?;
            for network in &planned {
                schema::put_network_in(tx, network)?;
            }
            Ok::<_, CloudError>(planned)
        })
        .await?;
    // Their fixed ranges join the NAT table's SNAT set.
    let mut changes = NetworkChanges { nat: true, ..NetworkChanges::default() };
    for network in &created {
        changes.merge(changes_of(network));
    }
    app.network().apply(trace, changes).await?;
    Ok(created)
}

/// Whether an instance or a port holds an address on the network (an address held back by the operator does
/// not count).
fn in_use(r: &impl Reads, id: NetworkId) -> Result<bool, StoreError> {
    let rows = r.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&id))?;
    Ok(rows.iter().any(|(_, row)| row.instance.is_some() || row.allocated))
}

/// Removes a network no instance or port uses, with the addresses held back on it.
fn remove_in(tx: &mut WriteTx<'_>, network: &Network) -> Result<(), CloudError> {
    let id = network.id;
    if in_use(tx, id)? {
        return Err(CloudError::Conflict(format!(
            "Network {} is still in use by instances or ports; delete them first.",
            network.label
        )));
    }
    for (key, _) in tx.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&id))? {
        free_fixed_ip_in(tx, &key)?;
    }
    tx.delete(&ALLOCATION_CURSORS, &id)?;
    schema::delete_network_in(tx, &id)?;
    Ok(())
}

/// What the network host must undo for a network that is gone: its segment, its fixed range in the NAT
/// table, and a VLAN network's project's VPN forward.
fn removed_changes(network: &Network) -> NetworkChanges {
    let mut changes = NetworkChanges { networks: vec![network.id], nat: true, ..NetworkChanges::default() };
    if !owned_by_network_manager(network) {
        changes.vlan_projects.extend(network.project);
    }
    changes
}

/// Deletes a network no instance uses.
pub async fn delete(app: &App, trace: &Trace, id: NetworkId) -> Result<(), CloudError> {
    let network = app
        .store
        .write(move |tx| {
            let network = tx.get(&NETWORKS, &id)?.ok_or_else(|| CloudError::not_found("Network", id))?;
            remove_in(tx, &network)?;
            Ok::<_, CloudError>(network)
        })
        .await?;
    app.network().apply(trace, removed_changes(&network)).await?;
    Ok(())
}

/// Binds a network to a project (by name or id), or (`None`) unbinds it.
pub async fn set_project(
    app: &App,
    trace: &Trace,
    id: NetworkId,
    project: Option<&str>,
) -> Result<Network, CloudError> {
    let project = project.map(|p| identity::named_project(app, p)).transpose()?;
    let (before, after) = app
        .store
        .write(move |tx| {
            let mut network = tx.get(&NETWORKS, &id)?.ok_or_else(|| CloudError::not_found("Network", id))?;
            let before = network.clone();
            if project.is_none() && in_use(tx, id)? {
                return Err(CloudError::Conflict(format!(
                    "Network {} is still in use by instances or ports; it cannot be disassociated.",
                    network.label
                )));
            }
            network.project = project;
            schema::put_network_in(tx, &network)?;
            Ok::<_, CloudError>((before, network))
        })
        .await?;
    // Its owner before and after re-apply it (the previous one removes its segment), and VPN forwards follow
    // the binding.
    let mut changes = changes_of(&before);
    changes.merge(changes_of(&after));
    app.network().apply(trace, changes).await?;
    Ok(after)
}

/// The project a Network API create is for, named by an admin (by name or id); the caller's own for anyone
/// else, who may name only it.
pub fn project_for(app: &App, auth: &AuthContext, name_or_id: &str) -> Result<ProjectId, CloudError> {
    let project = identity::named_project(app, name_or_id)?;
    if project != auth.project && !auth.has(Role::Admin) {
        return Err(CloudError::Forbidden(format!("Only an admin may create resources for project {name_or_id}.")));
    }
    Ok(project)
}

/// Whether the caller sees a bare network (as [`visible`] says for networks).
pub fn bare_visible(auth: &AuthContext, n: &BareNetwork) -> bool {
    auth.has(Role::Admin) || n.project == Some(auth.project) || n.project.is_none()
}

/// The bare networks the caller sees, oldest first.
pub fn list_bare(app: &App, auth: &AuthContext) -> Result<Vec<BareNetwork>, StoreError> {
    let mut bare: Vec<BareNetwork> = app
        .store
        .read(|r| r.scan(&BARE_NETWORKS))?
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| bare_visible(auth, n))
        .collect();
    bare.sort_by_key(|n| n.created_at);
    Ok(bare)
}

/// What a Network API network create asks for.
#[derive(Clone, Debug)]
pub struct NewNetwork {
    pub name: String,
    /// Every project of its mode shares it (admin only; a VLAN network is always one project's).
    pub shared: bool,
    /// The project it is for, by name or id (an admin may name another), else the caller's.
    pub project: Option<String>,
    pub mtu: Option<u32>,
}

/// Creates bare networks, all or none: each in its project's mode, waiting for its subnet.
pub async fn create_bare(
    app: &App,
    auth: &AuthContext,
    requests: Vec<NewNetwork>,
) -> Result<Vec<BareNetwork>, CloudError> {
    let mut planned = Vec::with_capacity(requests.len());
    for request in requests {
        if let Some(problem) = crate::names::name_problem("network", &request.name) {
            return Err(CloudError::BadRequest(problem));
        }
        if let Some(problem) = request.mtu.and_then(network_plan::mtu_problem) {
            return Err(CloudError::BadRequest(problem));
        }
        if request.shared && !auth.has(Role::Admin) {
            return Err(CloudError::Forbidden("Only an admin may create a shared network.".into()));
        }
        let project = match request.project.as_deref() {
            Some(p) => project_for(app, auth, p)?,
            None => auth.project,
        };
        let mode = app.store.read(|r| r.get(&PROJECTS, &project))?.map_or(NetworkMode::Flat, |p| p.network_mode);
        if request.shared && mode == NetworkMode::Vlan {
            return Err(CloudError::BadRequest(
                "A VLAN-mode network belongs to one project; it cannot be shared.".into(),
            ));
        }
        planned.push(BareNetwork {
            id: NetworkId::generate(),
            label: request.name,
            mode,
            project: (!request.shared).then_some(project),
            created_at: now_ms(),
            mtu: request.mtu,
        });
    }
    app.store
        .write(move |tx| {
            for network in &planned {
                tx.put(&BARE_NETWORKS, &network.id, network)?;
            }
            Ok::<_, CloudError>(planned)
        })
        .await
}

/// A network of the Network API the caller sees, with a subnet or bare.
#[derive(Clone, Debug)]
pub enum AnyNetwork {
    Subnetted(Network),
    Bare(BareNetwork),
}

/// Any network the caller sees by id, bare or not.
pub fn get_any(app: &App, auth: &AuthContext, id: &str) -> Result<AnyNetwork, CloudError> {
    let missing = || CloudError::NotFound(format!("Network {id} could not be found."));
    let parsed: NetworkId = id.parse().map_err(|_| missing())?;
    let (network, bare) =
        app.store.read(|r| Ok::<_, StoreError>((r.get(&NETWORKS, &parsed)?, r.get(&BARE_NETWORKS, &parsed)?)))?;
    match (network, bare) {
        (Some(n), _) if visible(auth, &n) => Ok(AnyNetwork::Subnetted(n)),
        (_, Some(b)) if bare_visible(auth, &b) => Ok(AnyNetwork::Bare(b)),
        _ => Err(missing()),
    }
}

/// Whether the caller may change a network of the Network API: an admin any, a member its project's own.
fn may_change(auth: &AuthContext, project: Option<ProjectId>) -> Result<(), CloudError> {
    if auth.has(Role::Admin) || (project == Some(auth.project) && auth.has(Role::Member)) {
        Ok(())
    } else {
        Err(CloudError::Forbidden("Only an admin may change a network its project does not own.".into()))
    }
}

/// Renames a network. Instances keep the name their addresses were listed under, so one in use keeps it.
pub async fn rename(
    app: &App,
    auth: &AuthContext,
    network: &AnyNetwork,
    name: String,
) -> Result<AnyNetwork, CloudError> {
    if let Some(problem) = crate::names::name_problem("network", &name) {
        return Err(CloudError::BadRequest(problem));
    }
    let renamed = match network.clone() {
        AnyNetwork::Bare(mut bare) => {
            may_change(auth, bare.project)?;
            bare.label = name;
            let record = bare.clone();
            app.store.write(move |tx| tx.put(&BARE_NETWORKS, &record.id, &record)).await?;
            AnyNetwork::Bare(bare)
        }
        AnyNetwork::Subnetted(n) => {
            may_change(auth, n.project)?;
            let id = n.id;
            let renamed = app
                .store
                .write(move |tx| {
                    let mut current = tx.get(&NETWORKS, &id)?.ok_or_else(|| CloudError::not_found("Network", id))?;
                    if in_use(tx, id)? {
                        return Err(CloudError::Conflict(format!(
                            "Network {} is in use: its servers list their addresses under its name; rename it when \
                             none uses it.",
                            current.label
                        )));
                    }
                    current.label = name;
                    schema::put_network_in(tx, &current)?;
                    Ok(current)
                })
                .await?;
            AnyNetwork::Subnetted(renamed)
        }
    };
    Ok(renamed)
}

/// Deletes a network of the Network API with its subnet, when no instance or port uses it.
pub async fn delete_any(app: &App, trace: &Trace, auth: &AuthContext, network: &AnyNetwork) -> Result<(), CloudError> {
    match network {
        AnyNetwork::Bare(bare) => {
            may_change(auth, bare.project)?;
            let id = bare.id;
            app.store.write(move |tx| tx.delete(&BARE_NETWORKS, &id).map(drop)).await?;
            Ok(())
        }
        AnyNetwork::Subnetted(n) => {
            may_change(auth, n.project)?;
            delete(app, trace, n.id).await
        }
    }
}

/// What a subnet create asks for, checked for its shape by the gateway.
#[derive(Clone, Debug)]
pub struct NewSubnet {
    pub network: String,
    pub name: String,
    pub cidr: Ipv4Network,
    /// `None`: the range's first host address.
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub enable_dhcp: bool,
    /// One allocation pool, as its first and last address.
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// Gives a bare network its subnet: it becomes a network of its mode on that range (Flat or FlatDHCP as
/// `enable_dhcp` says, in the flat modes), with a bridge of its own (a VLAN one: a free segment id and the
/// next VPN port), and the network host builds it.
pub async fn create_subnet(
    app: &App,
    trace: &Trace,
    auth: &AuthContext,
    new: NewSubnet,
) -> Result<Network, CloudError> {
    let bare = match get_any(app, auth, &new.network)? {
        AnyNetwork::Bare(bare) => bare,
        AnyNetwork::Subnetted(n) => {
            return Err(CloudError::Conflict(format!(
                "Network {} has its subnet already; a nimbus network has one subnet, its range.",
                n.label
            )));
        }
    };
    may_change(auth, bare.project)?;
    if let Some(problem) = crate::names::optional_name_problem("subnet", &new.name) {
        return Err(CloudError::BadRequest(problem));
    }
    let mode = match (bare.mode, new.enable_dhcp) {
        (NetworkMode::Vlan, true) => NetworkMode::Vlan,
        (NetworkMode::Vlan, false) => {
            return Err(CloudError::BadRequest(
                "A VLAN-mode network always runs DHCP; enable_dhcp must be true.".into(),
            ));
        }
        (_, true) => NetworkMode::FlatDhcp,
        (_, false) => NetworkMode::Flat,
    };
    if new.dns.len() > 2 {
        return Err(CloudError::BadRequest(format!(
            "{} DNS name servers given; a nimbus network hands out at most two.",
            new.dns.len()
        )));
    }
    let mut request = NetworkRequest::new(&bare.label, mode, new.cidr);
    request.network_size = new.cidr.size();
    request.gateway = new.gateway;
    request.dns1 = new.dns.first().copied();
    request.dns2 = new.dns.get(1).copied();
    request.project = bare.project;
    request.mtu = bare.mtu;
    request.allowed_start = new.pool.map(|p| p.0);
    request.allowed_end = new.pool.map(|p| p.1);
    // A flat network of the Network API gets a bridge of its own, named as Neutron's Linux bridges are, from
    // the id's random end (its start is a timestamp, the same for networks made together).
    if mode != NetworkMode::Vlan {
        request.bridge = Some(format!("brq{}", &bare.id.0.simple().to_string()[21..]));
    }
    let (id, subnet_name) = (bare.id, new.name);
    let network = app
        .store
        .write(move |tx| {
            if tx.get(&BARE_NETWORKS, &id)?.is_none() {
                return Err(CloudError::Conflict(format!("Network {id} has its subnet already, or is gone.")));
            }
            let existing: Vec<Network> = tx.scan(&NETWORKS)?.into_iter().map(|(_, n)| n).collect();
            request.vlan_start = network_plan::free_vlan(&existing);
            request.vpn_start = network_plan::free_vpn_port(&existing);
            let mut planned = network_plan::plan(&request, &existing, bare.created_at).map_err(plan_error)?;
            let mut network = planned.remove(0);
            network.id = id;
            network.subnet_name = subnet_name;
            tx.delete(&BARE_NETWORKS, &id)?;
            schema::put_network_in(tx, &network)?;
            Ok::<_, CloudError>(network)
        })
        .await?;
    let mut changes = NetworkChanges { nat: true, ..NetworkChanges::default() };
    changes.merge(changes_of(&network));
    app.network().apply(trace, changes).await?;
    Ok(network)
}

/// Deletes a network's subnet when no instance or port uses it: the network is bare again.
pub async fn delete_subnet(app: &App, trace: &Trace, auth: &AuthContext, network: &Network) -> Result<(), CloudError> {
    may_change(auth, network.project)?;
    let id = network.id;
    let network = app
        .store
        .write(move |tx| {
            let network = tx.get(&NETWORKS, &id)?.ok_or_else(|| CloudError::not_found("Subnet", id))?;
            remove_in(tx, &network)?;
            let bare = BareNetwork {
                id,
                label: network.label.clone(),
                mode: if network.mode == NetworkMode::Vlan { NetworkMode::Vlan } else { NetworkMode::Flat },
                project: network.project,
                created_at: network.created_at,
                mtu: network.mtu,
            };
            tx.put(&BARE_NETWORKS, &id, &bare)?;
            Ok::<_, CloudError>(network)
        })
        .await?;
    app.network().apply(trace, removed_changes(&network)).await?;
    Ok(())
}

fn plan_error(e: PlanError) -> CloudError {
    match e {
        PlanError::Invalid(m) => CloudError::BadRequest(m),
        PlanError::Conflict(m) => CloudError::Conflict(m),
    }
}

/// Names a network's subnet.
pub async fn rename_subnet(
    app: &App,
    auth: &AuthContext,
    network: &Network,
    name: String,
) -> Result<Network, CloudError> {
    if let Some(problem) = crate::names::name_problem("subnet", &name) {
        return Err(CloudError::BadRequest(problem));
    }
    may_change(auth, network.project)?;
    let id = network.id;
    app.store
        .write(move |tx| {
            let mut current = tx.get(&NETWORKS, &id)?.ok_or_else(|| CloudError::not_found("Subnet", id))?;
            current.subnet_name = name;
            schema::put_network_in(tx, &current)?;
            Ok(current)
        })
        .await
}
