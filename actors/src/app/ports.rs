//! Ports as the Network API has them: every interface of an instance is a port, and a port can also be
//! created on its own (a fixed address and a MAC held on a network) for a server create to take. Such a port
//! outlives its instances: a delete gives it back, with its address, for the next one.

use std::net::Ipv4Addr;

use nimbus_protocol::ids::{HostId, InstanceId, NetworkId, PortId, ProjectId, SecurityGroupId};
use nimbus_protocol::network::NetworkChanges;
use nimbus_protocol::trace::Trace;
use nimbus_storage::records::{FixedIp, Instance, Interface, Port, Role, Usage, now_ms};
use nimbus_storage::schema::{FIXED_IPS, NETWORKS, PORTS};
use nimbus_storage::{Pair, Reads, StoreError, WriteTx};

use crate::app::App;
use crate::app::dataplane_state::changes_of;
use crate::app::error::CloudError;
use crate::app::fixed_ips::{Holder, free_fixed_ip_in, new_address_in, port_hostname};
use crate::app::identity::AuthContext;
use crate::app::networks::{self, AnyNetwork};
use crate::app::{instances, quota};

/// A port as the API shows it, whether an instance has it or not.
#[derive(Clone, Debug)]
pub struct PortInfo {
    pub id: PortId,
    /// Its name; an interface nova made has none.
    pub name: String,
    pub project: ProjectId,
    pub network: NetworkId,
    pub mac: String,
    pub address: Ipv4Addr,
    /// The instance that has it, and that instance's host and security groups.
    pub device: Option<InstanceId>,
    pub host: Option<HostId>,
    pub security_groups: Vec<SecurityGroupId>,
    /// Whether it was made by the Network API (and so outlives its instance).
    pub standalone: bool,
}

impl PortInfo {
    fn of_interface(instance: &Instance, interface: &Interface, standalone: Option<&Port>) -> PortInfo {
        PortInfo {
            id: interface.id,
            name: standalone.map(|p| p.name.clone()).unwrap_or_default(),
            project: instance.project,
            network: interface.network,
            mac: interface.mac.clone(),
            address: interface.address,
            device: Some(instance.id),
            host: instance.host.clone(),
            security_groups: instance.security_groups.clone(),
            standalone: standalone.is_some(),
        }
    }

    fn of_free(port: &Port) -> PortInfo {
        PortInfo {
            id: port.id,
            name: port.name.clone(),
            project: port.project,
            network: port.network,
            mac: port.mac.clone(),
            address: port.address,
            device: None,
            host: None,
            security_groups: Vec::new(),
            standalone: true,
        }
    }
}

/// What a port create asks for, checked for its shape by the gateway.
#[derive(Clone, Debug)]
pub struct NewPort {
    pub network: String,
    pub name: String,
    pub address: Option<Ipv4Addr>,
    /// The project it is for (an admin may name another; by name or id), else the caller's.
    pub project: Option<String>,
}

/// Every port the caller sees: its project's (all for an admin), the interfaces of instances and the ports
/// no instance has.
pub fn list(app: &App, auth: &AuthContext) -> Result<Vec<PortInfo>, CloudError> {
    let admin = auth.has(Role::Admin);
    let (instances, ports) = app.store.read(|r| {
        let instances = instances::all_in(r, (!admin).then_some(auth.project))?;
        Ok::<_, StoreError>((instances, r.scan(&PORTS)?))
    })?;
    let ports: Vec<Port> = ports.into_iter().map(|(_, p)| p).collect();
    let standalone = |id: PortId| ports.iter().find(|p| p.id == id);
    let mut out: Vec<PortInfo> = instances
        .iter()
        .flat_map(|i| i.interfaces.iter().map(move |f| (i, f)))
        .map(|(i, f)| PortInfo::of_interface(i, f, standalone(f.id)))
        .collect();
    out.extend(
        ports.iter().filter(|p| p.device.is_none() && (admin || p.project == auth.project)).map(PortInfo::of_free),
    );
    Ok(out)
}

/// A port the caller sees, by id; anything else is "not found".
pub fn get(app: &App, auth: &AuthContext, id: &str) -> Result<PortInfo, CloudError> {
    list(app, auth)?
        .into_iter()
        .find(|p| p.id.to_string() == id)
        .ok_or_else(|| CloudError::NotFound(format!("Port {id} could not be found.")))
}

/// Creates the ports, all or none (a bulk create is one transaction): each gets a fixed address (the one
/// asked for, or the lowest free) and a MAC, charged to its project's fixed-IP quota.
pub async fn create(
    app: &App,
    trace: &Trace,
    auth: &AuthContext,
    requests: Vec<NewPort>,
) -> Result<Vec<PortInfo>, CloudError> {
    let mut planned = Vec::with_capacity(requests.len());
    for request in requests {
        let network = match networks::get_any(app, auth, &request.network)? {
            AnyNetwork::Subnetted(network) => network,
            AnyNetwork::Bare(bare) => {
                return Err(CloudError::Conflict(format!(
                    "Network {} has no subnet yet, so no addresses for a port; create its subnet first.",
                    bare.label
                )));
            }
        };
        let project = match request.project.as_deref() {
            Some(p) => networks::project_for(app, auth, p)?,
            None => auth.project,
        };
        if let Some(problem) = crate::names::optional_name_problem("port", &request.name) {
            return Err(CloudError::BadRequest(problem));
        }
        if network.project.is_some_and(|owner| owner != project) {
            return Err(CloudError::Forbidden(format!(
                "Network {} belongs to another project; a port for project {project} cannot be made on it.",
                network.label
            )));
        }
        if network.project.is_none() && !crate::app::dataplane_state::owned_by_network_manager(&network) {
            return Err(CloudError::Conflict(format!(
                "VLAN network {} is bound to no project yet; ports are made on networks in use.",
                network.label
            )));
        }
        planned.push((request, network, project));
    }
    let (created, networks) = app
        .store
        .write(move |tx| {
            let mut created = Vec::with_capacity(planned.len());
            let mut networks = Vec::new();
            for (request, network, project) in planned {
                let id = PortId::generate();
                let interface = new_address_in(tx, &network, request.address, project, Holder::Port(id))?;
                let port = Port {
                    id,
                    name: request.name,
                    project,
                    network: network.id,
                    network_label: network.label.clone(),
                    mac: interface.mac,
                    address: interface.address,
                    device: None,
                    created_at: now_ms(),
                };
                tx.put(&PORTS, &id, &port)?;
                created.push(PortInfo::of_free(&port));
                networks.push(network);
            }
            Ok::<_, CloudError>((created, networks))
        })
        .await?;
    // The DHCP servers learn the new hosts.
    let mut changes = NetworkChanges::default();
    for network in &networks {
        changes.merge(changes_of(network));
    }
    app.network().apply(trace, changes).await?;
    Ok(created)
}

/// Renames a port the caller sees (one `get` gave it).
pub async fn rename(app: &App, port: &PortInfo, name: String) -> Result<PortInfo, CloudError> {
    if let Some(problem) = crate::names::optional_name_problem("port", &name) {
        return Err(CloudError::BadRequest(problem));
    }
    if !port.standalone {
        return Err(CloudError::BadRequest(format!(
            "Port {} is an interface nova made for its server; it has no name to set.",
            port.id
        )));
    }
    let id = port.id;
    let renamed = app
        .store
        .write(move |tx| {
            let mut current = tx.get(&PORTS, &id)?.ok_or_else(|| CloudError::not_found("Port", id))?;
            current.name = name;
            tx.put(&PORTS, &id, &current)?;
            Ok::<_, CloudError>(current)
        })
        .await?;
    Ok(PortInfo { name: renamed.name, ..port.clone() })
}

/// Deletes a port no instance has: its address is free again and refunded.
pub async fn delete(app: &App, trace: &Trace, port: &PortInfo) -> Result<(), CloudError> {
    if let Some(device) = port.device {
        return Err(CloudError::Conflict(format!(
            "Port {} is in use by server {device}; delete the server first.",
            port.id
        )));
    }
    let id = port.id;
    let network = app
        .store
        .write(move |tx| {
            let port = tx.get(&PORTS, &id)?.ok_or_else(|| CloudError::not_found("Port", id))?;
            if let Some(device) = port.device {
                return Err(CloudError::Conflict(format!("Port {id} is in use by server {device}.")));
            }
            tx.delete(&PORTS, &id)?;
            free_fixed_ip_in(tx, &Pair(port.network, u32::from(port.address)))?;
            quota::refund_in(tx, port.project, Usage { fixed_ips: 1, ..Usage::default() })?;
            Ok(tx.get(&NETWORKS, &port.network)?)
        })
        .await?;
    if let Some(network) = network {
        app.network().apply(trace, changes_of(&network)).await?;
    }
    Ok(())
}

/// Why the port cannot go to an instance of `project`, if it cannot: the check a server create makes before
/// it logs anything (the network step binds it, and checks again).
pub fn unusable(r: &impl Reads, id: PortId, project: ProjectId) -> Result<Option<CloudError>, StoreError> {
    Ok(match r.get(&PORTS, &id)? {
        Some(port) if port.project != project => Some(CloudError::NotFound(format!("Port {id} could not be found."))),
        Some(Port { device: Some(device), .. }) => {
            Some(CloudError::Conflict(format!("Port {id} is still in use by server {device}.")))
        }
        Some(_) => None,
        None => Some(CloudError::NotFound(format!("Port {id} could not be found."))),
    })
}

/// Gives a port to an instance of its project (the network step): the instance's interface is the port.
pub(crate) fn bind_in(
    tx: &mut WriteTx<'_>,
    id: PortId,
    instance: &Instance,
    hostname: &str,
) -> Result<Interface, CloudError> {
    if let Some(refusal) = unusable(tx, id, instance.project)? {
        return Err(refusal);
    }
    let mut port = tx.get(&PORTS, &id)?.ok_or_else(|| CloudError::not_found("Port", id))?;
    let key = Pair(port.network, u32::from(port.address));
    let mut row = tx.get(&FIXED_IPS, &key)?.ok_or_else(|| CloudError::not_found("Fixed IP", port.address))?;
    row.instance = Some(instance.id);
    row.hostname = Some(hostname.to_string());
    tx.put(&FIXED_IPS, &key, &row)?;
    port.device = Some(instance.id);
    tx.put(&PORTS, &id, &port)?;
    Ok(Interface {
        id,
        network: port.network,
        network_label: port.network_label,
        mac: port.mac,
        address: port.address,
        floating: Vec::new(),
    })
}

/// Takes a port back from its instance, if the interface is one (`row` is its address, updated here for the
/// caller to write): returns whether it was.
pub(crate) fn unbind_in(tx: &mut WriteTx<'_>, id: PortId, row: &mut FixedIp) -> Result<bool, StoreError> {
    let Some(mut port) = tx.get(&PORTS, &id)? else { return Ok(false) };
    port.device = None;
    tx.put(&PORTS, &id, &port)?;
    row.instance = None;
    row.hostname = Some(port_hostname(row.address));
    Ok(true)
}
