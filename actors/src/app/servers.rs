//! Servers as the Compute API has them: create (the intent is logged and the project's conductor told),
//! delete and the power actions (logged the same way), show and list what the caller may see, and the
//! nova-network era floating-IP actions.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use nimbus_protocol::compute::PowerAction;
use nimbus_protocol::ids::{FlavorId, ImageId, InstanceId, ProjectId};
use nimbus_protocol::trace::Trace;
use nimbus_storage::records::{
    ImageStatus, Instance, NicRequest, Operation, OperationKind, RequestedNics, Role, TaskState, UserData, VmState,
    now_ms,
};
use nimbus_storage::schema::{
    BARE_NETWORKS, FLAVORS, IMAGES, INSTANCE_LIST, INSTANCES, NETWORKS, OPERATIONS, PROJECT_INSTANCE_LIST, USER_DATA,
};
use nimbus_storage::{NewestFirst, Pair, Reads, StoreError};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::floating_ips::{self, Caller};
use crate::app::identity::AuthContext;
use crate::app::instances::{self, TransitionError, new_instance, transition_in};
use crate::app::interfaces::InterfaceChange;
use crate::app::{fixed_ips, images, interfaces, key_pairs, networks, ports, quota, security_groups};
use crate::instance_state::{Event, api_status, api_status_of, task_state_name, vm_state_name};

/// A create request, checked for its shape by the gateway.
#[derive(Clone, Debug)]
pub struct NewServers {
    pub name: String,
    pub image: String,
    pub flavor: String,
    /// The interfaces asked for: each network must be one the caller sees (with its subnet), each port one of
    /// its project's that no instance has.
    pub networks: AskedNics,
    /// How many to create (`max_count`; `min_count` is not lower).
    pub count: u32,
    /// The caller's key pair the instances get (`key_name`).
    pub key_name: Option<String>,
    /// The project's security groups they are put in, by name or id; none named is the default group.
    pub security_groups: Vec<String>,
    /// What the metadata service hands them as their user data (decoded; at most [`MAX_USER_DATA`] bytes).
    pub user_data: Option<Vec<u8>>,
    /// Their server metadata.
    pub metadata: BTreeMap<String, String>,
    /// Their description (compute 2.19).
    pub description: Option<String>,
    /// The device tags of the requested interfaces (2.32), in the order of `networks`' list.
    pub nic_tags: Vec<Option<String>>,
}

/// The interfaces a create asks for, as the API names them.
#[derive(Clone, Debug, Default)]
pub enum AskedNics {
    #[default]
    Auto,
    None,
    These(Vec<NicAsk>),
}

/// One interface a create names.
#[derive(Clone, Debug)]
pub enum NicAsk {
    Given(NicRequest),
    /// `{"fixed_ip": …}` alone: this address, on the caller's network that holds it.
    Address(Ipv4Addr),
}

/// The interfaces asked for, with each address named alone resolved to the network the caller sees that
/// holds it.
fn resolve_nics(r: &impl Reads, auth: &AuthContext, asked: &AskedNics) -> Result<RequestedNics, CloudError> {
    let list = match asked {
        AskedNics::Auto => return Ok(RequestedNics::Auto),
        AskedNics::None => return Ok(RequestedNics::None),
        AskedNics::These(list) => list,
    };
    let mut resolved = Vec::with_capacity(list.len());
    for ask in list {
        resolved.push(match ask {
            NicAsk::Given(nic) => nic.clone(),
            NicAsk::Address(address) => {
                let holder = r
                    .scan(&NETWORKS)?
                    .into_iter()
                    .map(|(_, n)| n)
                    .find(|n| n.cidr.contains(*address) && networks::visible(auth, n))
                    .ok_or_else(|| {
                        CloudError::BadRequest(format!(
                            "No network you may use holds the fixed IP {address}; name its network by uuid."
                        ))
                    })?;
                NicRequest::Network { network: holder.id, address: Some(*address) }
            }
        });
    }
    Ok(RequestedNics::These(resolved))
}

/// The most metadata items a server keeps (nova's default `metadata_items` quota).
pub const MAX_METADATA_ITEMS: usize = 128;
/// The longest metadata key and value (nova's limits).
const MAX_METADATA_TEXT: usize = 255;

/// Why `items` cannot be a server's metadata, if it cannot.
fn metadata_problem(items: &BTreeMap<String, String>) -> Option<CloudError> {
    if items.len() > MAX_METADATA_ITEMS {
        return Some(CloudError::QuotaExceeded(format!(
            "Quota exceeded for metadata_items: {} asked, at most {MAX_METADATA_ITEMS} per server.",
            items.len()
        )));
    }
    items.iter().find_map(|(key, value)| {
        if key.is_empty() || key.chars().count() > MAX_METADATA_TEXT {
            Some(format!("Invalid metadata key {key:?}: keys are 1 to {MAX_METADATA_TEXT} characters."))
        } else if value.chars().count() > MAX_METADATA_TEXT {
            Some(format!("Invalid metadata value for key {key:?}: values are at most {MAX_METADATA_TEXT} characters."))
        } else {
            None
        }
        .map(CloudError::BadRequest)
    })
}

/// A change to a server's metadata, as the metadata API's calls ask it.
#[derive(Clone, Debug)]
pub enum MetadataChange {
    /// These items set, the others kept (`POST /metadata`, `PUT /metadata/{key}`).
    Merge(BTreeMap<String, String>),
    /// Exactly these items (`PUT /metadata`).
    Replace(BTreeMap<String, String>),
    /// This key gone (`DELETE /metadata/{key}`); a key the server does not have is a 404.
    Delete(String),
}

/// Changes the metadata of an instance the caller sees; returns all of it after the change.
pub async fn change_metadata(
    app: &App,
    instance: &Instance,
    change: MetadataChange,
) -> Result<BTreeMap<String, String>, CloudError> {
    let id = instance.id;
    app.store
        .write(move |tx| {
            let mut current = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
            match change {
                MetadataChange::Merge(items) => current.metadata.extend(items),
                MetadataChange::Replace(items) => current.metadata = items,
                MetadataChange::Delete(key) => {
                    if current.metadata.remove(&key).is_none() {
                        return Err(CloudError::NotFound(format!("Metadata item {key} was not found.")));
                    }
                }
            }
            if let Some(problem) = metadata_problem(&current.metadata) {
                return Err(problem);
            }
            current.updated_at = now_ms();
            tx.put(&INSTANCES, &id, &current)?;
            Ok(current.metadata)
        })
        .await
}

/// The most user data a server keeps (64 KiB decoded, as nova-era clouds allowed).
pub const MAX_USER_DATA: usize = 64 * 1024;

/// Who asks, for the floating-IP operations.
pub fn caller(auth: &AuthContext) -> Caller {
    Caller { project: auth.project, admin: auth.has(Role::Admin) }
}

/// Logs the intent (the instances, building, and their build operations) in one transaction, charging the
/// quota, and tells the project's conductor. Servers of a multi-create are named `name-1`, `name-2`, ….
pub async fn create(
    app: &App,
    trace: &Trace,
    auth: &AuthContext,
    new: NewServers,
) -> Result<Vec<Instance>, CloudError> {
    let bad = CloudError::BadRequest;
    if let Some(problem) = crate::names::name_problem("server", &new.name) {
        return Err(bad(format!("Invalid input for field/attribute name: {problem}")));
    }
    if let Some(problem) = metadata_problem(&new.metadata) {
        return Err(problem);
    }
    if let Some(problem) = new.description.as_deref().and_then(description_problem) {
        return Err(bad(problem));
    }
    if let Some(data) = new.user_data.as_ref().filter(|d| d.len() > MAX_USER_DATA) {
        return Err(bad(format!("User data is {} bytes decoded; at most {MAX_USER_DATA} are kept.", data.len())));
    }
    let (image, flavor, requested, key) = app.store.read(|r| {
        let image = match new.image.parse::<ImageId>() {
            Ok(id) => r.get(&IMAGES, &id)?,
            Err(_) => None,
        };
        let flavor = r.get(&FLAVORS, &FlavorId(new.flavor.clone()))?;
        let nics = resolve_nics(r, auth, &new.networks)?;
        let requested = nics_problem(r, auth, &nics, new.count)?.map_or(Ok(nics), Err);
        let key = new.key_name.as_deref().map(|name| key_pairs::instance_key(r, auth.user, name)).transpose()?;
        Ok::<_, CloudError>((image, flavor, requested, key))
    })?;
    let image = image
        .filter(|i| images::visible(auth, i))
        .ok_or_else(|| bad(format!("Image {} could not be found.", new.image)))?;
    if image.status != ImageStatus::Active {
        return Err(bad(format!("Image {} is not active: its data has not been uploaded.", image.id)));
    }
    let flavor = flavor.ok_or_else(|| bad(format!("Flavor {} could not be found.", new.flavor)))?;
    let nics = requested?;

    let now = now_ms();
    let reservation_id = reservation_id();
    let instances: Vec<Instance> = (1..=new.count)
        .map(|n| {
            let name = if new.count > 1 { format!("{}-{n}", new.name) } else { new.name.clone() };
            Instance {
                key: key.clone(),
                metadata: new.metadata.clone(),
                requested_nics: nics.clone(),
                description: new.description.clone(),
                requested_tags: new.nic_tags.clone(),
                reservation_id: reservation_id.clone(),
                launch_index: n - 1,
                ..new_instance(name, auth.project, auth.user, &flavor, image.id, now)
            }
        })
        .collect();
    let mut records = instances;
    let request_id = trace.request_id.clone();
    // Charged at once, so an over-quota answer names the whole request.
    let usage = quota::instances_usage(new.count, flavor.vcpus, flavor.ram_mb);
    let project = auth.project;
    let (groups, user_data) = (new.security_groups, new.user_data.map(|bytes| UserData { bytes }));
    let instances = app
        .store
        .write(move |tx| {
            quota::charge_in(tx, project, usage)?;
            let groups = security_groups::resolve_in(tx, project, &groups)?;
            for instance in &mut records {
                instance.security_groups = groups.clone();
                instances::insert_in(tx, instance)?;
                if let Some(data) = &user_data {
                    tx.put(&USER_DATA, &instance.id, data)?;
                }
                let op = Operation {
                    instance: instance.id,
                    project: instance.project,
                    kind: OperationKind::Build,
                    started_at: now,
                    request_id: request_id.clone(),
                };
                tx.put(&OPERATIONS, &instance.id, &op)?;
            }
            Ok::<_, CloudError>(records)
        })
        .await?;
    for instance in &instances {
        tracing::info!(instance = %instance.id, project = %instance.project, name = %instance.name, "build logged");
        app.notify_conductor(trace, instance.project, instance.id);
    }
    Ok(instances)
}

/// Why the interfaces asked for cannot be given to `count` new instances of the caller's project, if they
/// cannot: a network it does not see or without a subnet, a port not its project's or in use, or one port (or
/// fixed address) asked for twice or for several instances.
fn nics_problem(
    r: &impl Reads,
    auth: &AuthContext,
    nics: &RequestedNics,
    count: u32,
) -> Result<Option<CloudError>, StoreError> {
    let RequestedNics::These(list) = nics else { return Ok(None) };
    let bad = |m: String| Ok(Some(CloudError::BadRequest(m)));
    let mut ports = std::collections::BTreeSet::new();
    for nic in list {
        match nic {
            NicRequest::Network { network, address } => {
                if address.is_some() && count > 1 {
                    return bad("A fixed IP cannot be given to several instances; create them one at a time.".into());
                }
                match r.get(&NETWORKS, network)? {
                    Some(n) if networks::visible(auth, &n) => {
                        if let Some(address) = address
                            && let Some(problem) = fixed_ips::address_problem(r, &n, *address)?
                        {
                            return Ok(Some(problem));
                        }
                    }
                    _ if r.get(&BARE_NETWORKS, network)?.is_some_and(|n| networks::bare_visible(auth, &n)) => {
                        return bad(format!("Network {network} has no subnet; create one before booting on it."));
                    }
                    _ => return bad(format!("Network {network} could not be found.")),
                }
            }
            NicRequest::Port(port) => {
                if count > 1 {
                    return bad("Unable to launch multiple instances with a single configured port ID.".into());
                }
                if !ports.insert(*port) {
                    return bad(format!("Port {port} is asked for twice."));
                }
                if let Some(problem) = ports::unusable(r, *port, auth.project)? {
                    return Ok(Some(problem));
                }
            }
        }
    }
    Ok(None)
}

/// The instance if the caller may see it: their project's, or any for an admin. Anything else is "not
/// found", so another project's ids are not even confirmed to exist.
pub fn get(app: &App, auth: &AuthContext, id: &str) -> Result<Instance, CloudError> {
    let missing = || CloudError::NotFound(format!("Instance {id} could not be found."));
    let parsed: InstanceId = id.parse().map_err(|_| missing())?;
    let instance = app.store.read(|r| r.get(&INSTANCES, &parsed))?.ok_or_else(missing)?;
    if instance.project != auth.project && !auth.has(Role::Admin) {
        return Err(missing());
    }
    Ok(instance)
}

/// The most tags a server has (nova's limit), and the longest tag.
pub const MAX_TAGS: usize = 50;
const MAX_TAG_LENGTH: usize = 60;

/// Why `tag` cannot be a server tag, if it cannot (nova's rules: 1 to 60 characters, no `/` or `,`).
pub fn tag_problem(tag: &str) -> Option<String> {
    let fits = !tag.is_empty() && tag.chars().count() <= MAX_TAG_LENGTH && !tag.contains(['/', ',']);
    (!fits || tag.chars().any(char::is_control)).then(|| {
        format!("Invalid tag {tag:?}: a tag is 1 to {MAX_TAG_LENGTH} printable characters, without '/' or ','.")
    })
}

/// A change to a server's tags (compute 2.26's `/servers/{id}/tags`).
#[derive(Clone, Debug)]
pub enum TagChange {
    /// Exactly these.
    Replace(Vec<String>),
    /// This one too (nothing to do if it has it).
    Add(String),
    /// This one gone; a tag the server does not have is a 404.
    Remove(String),
}

/// Changes the tags of a server the caller sees; returns them after the change and whether the change added a
/// tag it did not have. A server being built or deleted cannot have its tags changed (409, as nova).
pub async fn change_tags(app: &App, instance: &Instance, change: TagChange) -> Result<(Vec<String>, bool), CloudError> {
    let given = match &change {
        TagChange::Replace(tags) => tags.clone(),
        TagChange::Add(tag) | TagChange::Remove(tag) => vec![tag.clone()],
    };
    if let Some(problem) = given.iter().find_map(|t| tag_problem(t)) {
        return Err(CloudError::BadRequest(problem));
    }
    let id = instance.id;
    app.store
        .write(move |tx| {
            let mut current = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
            if current.vm_state == VmState::Building || current.task_state == Some(TaskState::Deleting) {
                return Err(CloudError::Conflict(format!(
                    "Cannot change the tags of instance {id} while it is in vm_state {}.",
                    vm_state_name(current.vm_state)
                )));
            }
            let mut added = false;
            match change {
                TagChange::Replace(tags) => {
                    let mut unique = Vec::new();
                    for tag in tags {
                        if !unique.contains(&tag) {
                            unique.push(tag);
                        }
                    }
                    current.tags = unique;
                }
                TagChange::Add(tag) => {
                    if !current.tags.contains(&tag) {
                        current.tags.push(tag);
                        added = true;
                    }
                }
                TagChange::Remove(tag) => {
                    let before = current.tags.len();
                    current.tags.retain(|t| *t != tag);
                    if current.tags.len() == before {
                        return Err(CloudError::NotFound(format!("Tag {tag} could not be found on instance {id}.")));
                    }
                }
            }
            if current.tags.len() > MAX_TAGS {
                return Err(CloudError::BadRequest(format!(
                    "Instance {id} would have {} tags; a server has at most {MAX_TAGS}.",
                    current.tags.len()
                )));
            }
            current.updated_at = now_ms();
            tx.put(&INSTANCES, &id, &current)?;
            Ok((current.tags, added))
        })
        .await
}

/// The user data of each of `ids` created with some (what compute 2.3 shows an admin).
pub fn user_data(
    app: &App,
    ids: impl IntoIterator<Item = InstanceId>,
) -> Result<BTreeMap<InstanceId, Vec<u8>>, StoreError> {
    app.store.read(|r| {
        let mut out = BTreeMap::new();
        for id in ids {
            if let Some(data) = r.get(&USER_DATA, &id)? {
                out.insert(id, data.bytes);
            }
        }
        Ok(out)
    })
}

/// A create request's id, shared by the instances it makes (nova's `r-` and eight characters).
fn reservation_id() -> String {
    use rand::Rng;
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .map(|c| char::from(c).to_ascii_lowercase())
        .take(8)
        .collect();
    format!("r-{tail}")
}

/// Why `text` cannot be a server's description, if it cannot (nova's limits).
fn description_problem(text: &str) -> Option<String> {
    (text.chars().count() > 255 || text.chars().any(char::is_control)).then(|| {
        "Invalid input for field/attribute description: at most 255 characters, none of them control characters."
            .to_string()
    })
}

/// What `PUT /servers/{id}` changes: the name, the description (`Some(None)` clears it).
#[derive(Clone, Debug, Default)]
pub struct ServerUpdate {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
}

/// Changes the name or description of an instance the caller sees. Its DHCP hostname stays the one it was
/// given at its first address, as nova keeps `hostname` when a server is renamed.
pub async fn update(app: &App, instance: &Instance, update: ServerUpdate) -> Result<Instance, CloudError> {
    if let Some(problem) = update.name.as_deref().and_then(|name| crate::names::name_problem("server", name)) {
        return Err(CloudError::BadRequest(format!("Invalid input for field/attribute name: {problem}")));
    }
    if let Some(problem) = update.description.as_ref().and_then(|d| d.as_deref()).and_then(description_problem) {
        return Err(CloudError::BadRequest(problem));
    }
    let id = instance.id;
    app.store
        .write(move |tx| {
            let mut current = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
            if let Some(name) = update.name {
                current.name = name;
            }
            if let Some(description) = update.description {
                current.description = description;
            }
            current.updated_at = now_ms();
            tx.put(&INSTANCES, &id, &current)?;
            Ok(current)
        })
        .await
}

/// Logs the delete of an instance the caller sees (it supersedes any build in flight; the conductor notices
/// when its step returns) and tells the project's conductor.
pub async fn delete(app: &App, trace: &Trace, instance: &Instance) -> Result<(), CloudError> {
    let (instance_id, project) = (instance.id, instance.project);
    let request_id = trace.request_id.clone();
    let logged = app
        .store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &instance_id)?.ok_or(TransitionError::Gone(instance_id))?;
            if current.task_state != Some(TaskState::Deleting) {
                transition_in(tx, instance_id, Event::DeleteRequested, |_| Ok(()), |_| {})?;
            }
            let op = Operation {
                instance: instance_id,
                project,
                kind: OperationKind::Delete,
                started_at: now_ms(),
                request_id,
            };
            tx.put(&OPERATIONS, &instance_id, &op)?;
            Ok::<_, TransitionError>(())
        })
        .await;
    match logged {
        Ok(()) => {}
        Err(TransitionError::Gone(_)) => return Err(CloudError::not_found("Instance", instance_id)),
        Err(TransitionError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(CloudError::Conflict(nimbus_protocol::failure::chain(&e))),
    }
    tracing::info!(instance = %instance_id, %project, "delete logged");
    app.notify_conductor(trace, project, instance_id);
    Ok(())
}

/// Logs a power action on the server (`os-stop`, `os-start`, `reboot`, `pause`, …, named `name` in the
/// refusal) and tells its conductor, which has its host do it. A state the action cannot start from, or
/// another action under way, is a 409 with the state, as nova answers.
pub async fn power(
    app: &App,
    trace: &Trace,
    instance: &Instance,
    action: PowerAction,
    name: &'static str,
) -> Result<(), CloudError> {
    let (id, project) = (instance.id, instance.project);
    let request_id = trace.request_id.clone();
    let logged = app
        .store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
            let refusal = state_refusal(&current);
            let conflict = || CloudError::Conflict(format!("Cannot '{name}' instance {id} {refusal}"));
            if current.host.is_none() || tx.get(&OPERATIONS, &id)?.is_some() {
                return Err(conflict());
            }
            transition_in(tx, id, Event::PowerRequested(action), |_| Ok(()), |_| {}).map_err(|e| match e {
                TransitionError::Invalid { .. } => conflict(),
                other => transition_failure(id, other),
            })?;
            let op = Operation { instance: id, project, kind: OperationKind::Power, started_at: now_ms(), request_id };
            tx.put(&OPERATIONS, &id, &op)?;
            Ok(())
        })
        .await;
    logged?;
    tracing::info!(instance = %id, %project, ?action, "power action logged");
    app.notify_conductor(trace, project, id);
    Ok(())
}

/// `addFixedIp` / `removeFixedIp` (named `name` in a refusal): changes the interfaces of an ACTIVE server and
/// logs the change for its conductor, which has its host plug or unplug the NIC; the network host learns of
/// the address at once. Another operation under way, or a server not ACTIVE, is a 409.
pub async fn change_interfaces(
    app: &App,
    trace: &Trace,
    auth: &AuthContext,
    instance: &Instance,
    change: NicChange,
    name: &'static str,
) -> Result<(), CloudError> {
    let change = match change {
        NicChange::Add(network) => {
            let network = networks::get(app, auth, &network)
                .map_err(|_| CloudError::BadRequest(format!("Network {network} could not be found.")))?;
            InterfaceChange::Add(Box::new(network))
        }
        NicChange::Remove(address) => InterfaceChange::Remove(address),
    };
    let (id, project) = (instance.id, instance.project);
    let request_id = trace.request_id.clone();
    let changes = app
        .store
        .write(move |tx| {
            let current = tx.get(&INSTANCES, &id)?.ok_or_else(|| CloudError::not_found("Instance", id))?;
            let refusal = state_refusal(&current);
            let ready = current.vm_state == VmState::Active && current.task_state.is_none() && current.host.is_some();
            if !ready || tx.get(&OPERATIONS, &id)?.is_some() {
                return Err(CloudError::Conflict(format!("Cannot '{name}' instance {id} {refusal}")));
            }
            let changes = interfaces::change_in(tx, id, change)?;
            let op =
                Operation { instance: id, project, kind: OperationKind::Interfaces, started_at: now_ms(), request_id };
            tx.put(&OPERATIONS, &id, &op)?;
            Ok(changes)
        })
        .await?;
    tracing::info!(instance = %id, %project, action = name, "interface change logged");
    app.notify_conductor(trace, project, id);
    app.network().apply(trace, changes).await?;
    Ok(())
}

/// What `addFixedIp` and `removeFixedIp` ask, as the gateway parsed it.
#[derive(Clone, Debug)]
pub enum NicChange {
    /// A new interface on the network with this id.
    Add(String),
    /// The interface with this fixed address goes.
    Remove(Ipv4Addr),
}

/// Why an action cannot start from the instance's state, in nova's words: "while it is in task_state …" (or
/// vm_state, when no task is under way).
fn state_refusal(instance: &Instance) -> String {
    match instance.task_state {
        Some(task) => format!("while it is in task_state {}", task_state_name(task)),
        None => format!("while it is in vm_state {}", vm_state_name(instance.vm_state)),
    }
}

fn transition_failure(id: InstanceId, e: TransitionError) -> CloudError {
    match e {
        TransitionError::Gone(_) => CloudError::not_found("Instance", id),
        TransitionError::Store(e) => e.into(),
        e => CloudError::Conflict(nimbus_protocol::failure::chain(&e)),
    }
}

/// Which servers a list shows.
#[derive(Clone, Debug, Default)]
pub struct ServerFilters {
    /// Servers whose name this regular expression matches somewhere (as nova's `re.search`).
    pub name: Option<regex::Regex>,
    /// The API status (`ACTIVE`, `BUILD`, …), in any case.
    pub status: Option<String>,
    pub image: Option<String>,
    pub flavor: Option<String>,
    /// Servers with a fixed or floating address this regular expression matches somewhere.
    pub ip: Option<regex::Regex>,
    /// Servers changed at or after this time (ms since the epoch).
    pub changes_since: Option<u64>,
    /// Servers on this host (admin only; the gateway checks the policy).
    pub host: Option<String>,
    pub user: Option<String>,
    pub key_name: Option<String>,
    /// The vm_state, as nova names it (`active`, `stopped`, …).
    pub vm_state: Option<String>,
    /// Every project's servers (admin only; the gateway checks the policy).
    pub all_projects: bool,
    pub project: Option<String>,
    pub limit: Option<usize>,
    /// Only the servers after this one.
    pub marker: Option<String>,
    /// 2.26's tag filters.
    pub tags: TagFilters,
}

/// The tag filters of a server list (compute 2.26): each a list of tags, empty when not given.
#[derive(Clone, Debug, Default)]
pub struct TagFilters {
    /// `tags`: servers with every one of them.
    pub all: Vec<String>,
    /// `tags-any`: servers with at least one of them.
    pub any: Vec<String>,
    /// `not-tags`: servers without at least one of them (not with all).
    pub not_all: Vec<String>,
    /// `not-tags-any`: servers with none of them.
    pub not_any: Vec<String>,
}

impl TagFilters {
    pub fn pass(&self, tags: &[String]) -> bool {
        let has = |t: &String| tags.contains(t);
        self.all.iter().all(has)
            && (self.any.is_empty() || self.any.iter().any(has))
            && (self.not_all.is_empty() || !self.not_all.iter().all(has))
            && !self.not_any.iter().any(has)
    }
}

impl ServerFilters {
    /// Whether `i` passes every filter given.
    pub fn pass(&self, i: &Instance) -> bool {
        let addresses =
            || i.interfaces.iter().flat_map(|n| std::iter::once(n.address).chain(n.floating.iter().copied()));
        self.name.as_ref().is_none_or(|n| n.is_match(&i.name))
            && self.status.as_deref().is_none_or(|st| api_status_of(i.vm_state, i.task_state).eq_ignore_ascii_case(st))
            && self.image.as_deref().is_none_or(|image| i.image.to_string() == image)
            && self.flavor.as_deref().is_none_or(|flavor| i.flavor.id.0 == flavor)
            && self.ip.as_ref().is_none_or(|ip| addresses().any(|a| ip.is_match(&a.to_string())))
            && self.changes_since.is_none_or(|since| i.updated_at >= since)
            && self.host.as_deref().is_none_or(|host| i.host.as_ref().is_some_and(|h| h.0 == host))
            && self.user.as_deref().is_none_or(|user| i.user.to_string() == user)
            && self.key_name.as_deref().is_none_or(|key| i.key.as_ref().is_some_and(|k| k.name == key))
            && self.vm_state.as_deref().is_none_or(|vm| vm_state_name(i.vm_state) == vm)
            && self.tags.pass(&i.tags)
    }
}

/// The servers the caller sees that pass `filters`, newest first (as Nova sorts by default), read from the
/// list orders from just after the marker: a page costs what it returns plus what the filters pass over.
pub fn list(app: &App, auth: &AuthContext, filters: &ServerFilters) -> Result<Vec<Instance>, CloudError> {
    let limit = filters.limit.unwrap_or(usize::MAX);
    app.store.read(|r| {
        // As Nova: the marker is any server the caller sees, whatever the filters.
        let after = match &filters.marker {
            Some(marker) => {
                let not_found = || CloudError::BadRequest(format!("marker [{marker}] not found"));
                let id: InstanceId = marker.parse().map_err(|_| not_found())?;
                let seen = r.get(&INSTANCES, &id)?.filter(|i| filters.all_projects || i.project == auth.project);
                Some(NewestFirst::of(&seen.ok_or_else(not_found)?))
            }
            None => None,
        };
        // One project's list, read from that project's order: the caller's own, or the one an admin asks for.
        // A project that is not the caller's (or not a project id) has no servers the caller sees.
        let asked = filters.project.as_deref().map(|p| p.parse::<ProjectId>().ok());
        let project = match (filters.all_projects, asked) {
            (true, None) => None,
            (true, Some(Some(p))) => Some(p),
            (false, None) => Some(auth.project),
            (false, Some(Some(p))) if p == auth.project => Some(p),
            (_, Some(_)) => return Ok(Vec::new()),
        };
        let mut page = Vec::new();
        let mut take = |id: InstanceId| -> Result<bool, StoreError> {
            if page.len() == limit {
                return Ok(false);
            }
            let passes = |i: &Instance| filters.pass(i);
            page.extend(r.get(&INSTANCES, &id)?.filter(passes));
            Ok(page.len() < limit)
        };
        match project {
            Some(p) => {
                let prefix = Pair::<ProjectId, NewestFirst>::prefix(&p);
                let after = after.map(|at| Pair(p, at));
                r.visit_keys(&PROJECT_INSTANCE_LIST, &prefix, after.as_ref(), |Pair(_, at)| take(at.id))?;
            }
            None => r.visit_keys(&INSTANCE_LIST, &[], after.as_ref(), |at| take(at.id))?,
        }
        Ok(page)
    })
}

/// The servers whose ports the Network API shows the caller: its project's (every project's for an admin).
pub fn visible(app: &App, auth: &AuthContext) -> Result<Vec<Instance>, CloudError> {
    let filters = ServerFilters { all_projects: auth.has(Role::Admin), ..ServerFilters::default() };
    list(app, auth, &filters)
}

/// `addFloatingIp`: associates one of the caller's floating IPs with the server (one `get` gave the caller).
pub async fn add_floating_ip(
    app: &App,
    trace: &Trace,
    auth: &AuthContext,
    instance: &Instance,
    address: Ipv4Addr,
) -> Result<(), CloudError> {
    floating_ips::associate(app, trace, caller(auth), address, instance.id).await.map(drop)
}

/// `removeFloatingIp`: takes one of the server's floating IPs off it.
pub async fn remove_floating_ip(
    app: &App,
    trace: &Trace,
    auth: &AuthContext,
    instance: &Instance,
    address: Ipv4Addr,
) -> Result<(), CloudError> {
    floating_ips::disassociate(app, trace, caller(auth), address, Some(instance.id)).await.map(drop)
}

/// How many instances there are in each API status (`ACTIVE`, `BUILD`, …), for the metrics.
pub fn count_by_status(app: &App) -> Result<BTreeMap<&'static str, u64>, StoreError> {
    let mut counts = BTreeMap::new();
    for (_, instance) in app.store.read(|r| r.scan(&INSTANCES))? {
        *counts.entry(api_status(instance.vm_state)).or_default() += 1;
    }
    Ok(counts)
}
