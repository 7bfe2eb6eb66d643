//! Fixed networks, as `nova-manage network` had them: created by carving an operator's range
//! ([`crate::network_plan`]), deleted when no instance uses them, bound to and unbound from projects, and who
//! sees which.

use nimbus_protocol::ids::NetworkId;
use nimbus_protocol::network::NetworkChanges;
use nimbus_protocol::trace::Trace;
use nimbus_storage::records::{Network, NetworkMode, Role, now_ms};
use nimbus_storage::schema::{self, ALLOCATION_CURSORS, FIXED_IPS, NETWORKS};
use nimbus_storage::{Pair, Reads, StoreError};

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
            let planned = network_plan::plan(&request, &existing, now_ms()).map_err(|e| match e {
                PlanError::Invalid(m) => CloudError::BadRequest(m),
                PlanError::Conflict(m) => CloudError::Conflict(m),
            })?;
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

/// Deletes a network no instance uses.
pub async fn delete(app: &App, trace: &Trace, id: NetworkId) -> Result<(), CloudError> {
    let network = app
        .store
        .write(move |tx| {
            let network = tx.get(&NETWORKS, &id)?.ok_or_else(|| CloudError::not_found("Network", id))?;
            let used = tx.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&id))?;
            if used.iter().any(|(_, row)| row.instance.is_some()) {
                return Err(CloudError::Conflict(format!(
                    "Network {} is still in use by instances; delete them first.",
                    network.label
                )));
            }
            for (key, _) in used {
                free_fixed_ip_in(tx, &key)?;
            }
            tx.delete(&ALLOCATION_CURSORS, &id)?;
            schema::delete_network_in(tx, &id)?;
            Ok(network)
        })
        .await?;
    // The segment goes, and so does its fixed range from the NAT table; a VLAN network's project drops its
    // VPN forward.
    let mut changes = NetworkChanges { networks: vec![network.id], nat: true, ..NetworkChanges::default() };
    if !owned_by_network_manager(&network) {
        changes.vlan_projects.extend(network.project);
    }
    app.network().apply(trace, changes).await?;
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
            if project.is_none() {
                let used = tx.scan_prefix(&FIXED_IPS, &Pair::<_, u32>::prefix(&id))?;
                if used.iter().any(|(_, row)| row.instance.is_some()) {
                    return Err(CloudError::Conflict(format!(
                        "Network {} is still in use by instances; it cannot be disassociated.",
                        network.label
                    )));
                }
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
