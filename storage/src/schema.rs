//! Every table and index of the store, and the schema version check made when a file is opened.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use nimbus_protocol::ids::{
    FlavorId, FloatingIpId, HostId, ImageId, InstanceId, NetworkId, PortId, ProjectId, SecurityGroupId, SecurityRuleId,
    UserId,
};

use crate::codec::{KeyCodec, Record};
use crate::error::StoreError;
use crate::keys::{NetworkChoice, NetworkOwner, NewestFirst, Pair};
use crate::records::{
    AllocationCursor, Assignment, BareNetwork, FixedIp, Flavor, FloatingIp, FloatingPool, Host, HostLoad, Image,
    Instance, KeyPair, Millis, Network, Operation, Port, Project, Quota, SecurityGroup, Token, Usage, User, UserData,
    now_ms,
};
use crate::table::{Index, Reads, Table, WriteTx};

/// The layout version this nimbus writes. Bump it when a table is added, removed or re-keyed (and teach
/// [`migrate`] to fill it from what the previous version kept), or when records gain values an older nimbus
/// cannot read.
/// - 2: `counters` (version 1 files need no migration: a missing counter is counted once from its table).
/// - 3: `host_loads` (counted once from the instances when an older file is opened).
/// - 4: `instance_list`, `project_instance_list` (filled once from the instances when an older file is opened);
///   `instances_by_project` dropped.
/// - 5: `network_choices` (filled once from the networks when an older file is opened).
/// - 6: `floating_held` (filled once from the floating IPs when an older file is opened).
/// - 7: `fixed_releases` (filled once from the fixed IPs when an older file is opened).
/// - 8: `token_expiry` (filled once from the tokens when an older file is opened).
/// - 9: `key_pairs` (new: nothing to fill).
/// - 10: `security_groups`, `security_group_names`, `security_rules`, `security_group_members` (an older
///   file's instances are put in their project's default group, made then).
/// - 11: `user_data` (new: nothing to fill).
/// - 12: no table changed; instances may be stopped, paused or suspended, with power actions logged as
///   operations, and images have a status and data (record version 2): values an older nimbus cannot read,
///   so it refuses the file at open instead of failing on the first such record.
/// - 13: `ports`, `bare_networks` (new: nothing to fill); `macs` names the port of each MAC, not its
///   instance (rewritten from the instances' interfaces when an older file is opened); instances record the
///   interfaces they were asked for (record version 5); operations may be interface changes.
pub const SCHEMA_VERSION: u32 = 13;

const META: TableDefinition<'static, &str, u32> = TableDefinition::new("meta");

pub const PROJECTS: Table<ProjectId, Project> = Table::new("projects");
pub const PROJECT_NAMES: Table<String, ProjectId> = Table::new("project_names");
pub const USERS: Table<UserId, User> = Table::new("users");
pub const USER_NAMES: Table<String, UserId> = Table::new("user_names");
pub const ASSIGNMENTS: Table<Pair<UserId, ProjectId>, Assignment> = Table::new("assignments");
/// Keyed by the hex SHA-256 of the token secret.
pub const TOKENS: Table<String, Token> = Table::new("tokens");
/// Every token by when it expires (then by key), so the purge reads only the expired ones; keep it in step
/// with [`put_token_in`] and [`delete_token_in`].
pub const TOKEN_EXPIRY: Table<Pair<Millis, String>, UserId> = Table::new("token_expiry");
/// Each user's key pairs by name.
pub const KEY_PAIRS: Table<Pair<UserId, String>, KeyPair> = Table::new("key_pairs");
pub const FLAVORS: Table<FlavorId, Flavor> = Table::new("flavors");
pub const IMAGES: Table<ImageId, Image> = Table::new("images");
pub const HOSTS: Table<HostId, Host> = Table::new("hosts");
pub const INSTANCES: Table<InstanceId, Instance> = Table::new("instances");
pub const INSTANCES_BY_HOST: Index<HostId, InstanceId> = Index::new("instances_by_host");
/// Every instance in list order (newest first), with its project: all projects' servers, a page at a time.
pub const INSTANCE_LIST: Table<NewestFirst, ProjectId> = Table::new("instance_list");
/// Each project's instances in list order: one project's servers, a page at a time.
pub const PROJECT_INSTANCE_LIST: Table<Pair<ProjectId, NewestFirst>, InstanceId> = Table::new("project_instance_list");
pub const NETWORKS: Table<NetworkId, Network> = Table::new("networks");
/// Every network in the order instances are given networks (see [`NetworkChoice`]); keep it in step with
/// [`put_network_in`] and [`delete_network_in`].
pub const NETWORK_CHOICES: Table<NetworkChoice, NetworkId> = Table::new("network_choices");
/// Keyed by network and the address as a big-endian integer, so one network's addresses scan in order.
pub const FIXED_IPS: Table<Pair<NetworkId, u32>, FixedIp> = Table::new("fixed_ips");
/// Deallocated addresses still waiting for their DHCP release, by when they were deallocated (then by
/// network and address), so the reclaim reads only those that are due. An entry may outlive its wait: the
/// row it names may have been freed by its release, or reserved since; the reclaim drops it when due.
pub const FIXED_RELEASES: Table<Pair<Millis, Pair<NetworkId, u32>>, NetworkId> = Table::new("fixed_releases");
pub const OPERATIONS: Table<InstanceId, Operation> = Table::new("operations");
pub const ALLOCATION_CURSORS: Table<NetworkId, AllocationCursor> = Table::new("allocation_cursors");
/// Every MAC in use and the port it is on, so a new one is never a duplicate.
pub const MACS: Table<String, PortId> = Table::new("macs");
/// The ports the Network API created (see [`Port`]).
pub const PORTS: Table<PortId, Port> = Table::new("ports");
/// The networks the Network API created that have no subnet yet (see [`BareNetwork`]).
pub const BARE_NETWORKS: Table<NetworkId, BareNetwork> = Table::new("bare_networks");
pub const FLOATING_POOLS: Table<String, FloatingPool> = Table::new("floating_pools");
/// Keyed by the address as a big-endian integer.
pub const FLOATING_IPS: Table<u32, FloatingIp> = Table::new("floating_ips");
pub const FLOATING_BY_ID: Index<FloatingIpId, u32> = Index::new("floating_by_id");
/// The floating IPs a project holds (by address), so lists and the NAT table read what is held, not whole
/// pools; keep it in step with [`put_floating_ip_in`].
pub const FLOATING_HELD: Table<Pair<ProjectId, u32>, FloatingIpId> = Table::new("floating_held");
/// Where the next free-address search of each floating pool starts.
pub const POOL_CURSORS: Table<String, AllocationCursor> = Table::new("pool_cursors");
pub const QUOTAS: Table<ProjectId, Quota> = Table::new("quotas");
/// The user data of the instances created with some.
pub const USER_DATA: Table<InstanceId, UserData> = Table::new("user_data");
pub const SECURITY_GROUPS: Table<SecurityGroupId, SecurityGroup> = Table::new("security_groups");
/// Each project's security groups by name (names are unique in a project); keep it in step with
/// [`put_security_group_in`] and [`delete_security_group_in`].
pub const SECURITY_GROUP_NAMES: Table<Pair<ProjectId, String>, SecurityGroupId> = Table::new("security_group_names");
/// The group of every rule, so a rule is found by its id alone.
pub const SECURITY_RULES: Table<SecurityRuleId, SecurityGroupId> = Table::new("security_rules");
/// The instances in each group, so the ports a rule change touches (and a group still in use) are found
/// without reading every instance; keep it in step with [`join_security_groups_in`].
pub const SECURITY_GROUP_MEMBERS: Table<Pair<SecurityGroupId, InstanceId>, InstanceId> =
    Table::new("security_group_members");
/// Keyed by what is counted (`host`, `mac`): the next number to hand out, so a new one costs a lookup, not a
/// scan.
pub const COUNTERS: Table<String, AllocationCursor> = Table::new("counters");
pub const USAGE: Table<ProjectId, Usage> = Table::new("usage");
/// What the instances on each host use of it (see [`HostLoad`]).
pub const HOST_LOADS: Table<HostId, HostLoad> = Table::new("host_loads");

const TABLES: &[&str] = &[
    PROJECTS.name(),
    PROJECT_NAMES.name(),
    USERS.name(),
    USER_NAMES.name(),
    ASSIGNMENTS.name(),
    TOKENS.name(),
    FLAVORS.name(),
    IMAGES.name(),
    HOSTS.name(),
    INSTANCES.name(),
    NETWORKS.name(),
    FIXED_IPS.name(),
    OPERATIONS.name(),
    ALLOCATION_CURSORS.name(),
    MACS.name(),
    FLOATING_POOLS.name(),
    FLOATING_IPS.name(),
    POOL_CURSORS.name(),
    QUOTAS.name(),
    USAGE.name(),
    COUNTERS.name(),
    HOST_LOADS.name(),
    INSTANCE_LIST.name(),
    PROJECT_INSTANCE_LIST.name(),
    NETWORK_CHOICES.name(),
    FLOATING_HELD.name(),
    FIXED_RELEASES.name(),
    TOKEN_EXPIRY.name(),
    KEY_PAIRS.name(),
    SECURITY_GROUPS.name(),
    SECURITY_GROUP_NAMES.name(),
    SECURITY_RULES.name(),
    SECURITY_GROUP_MEMBERS.name(),
    USER_DATA.name(),
    PORTS.name(),
    BARE_NETWORKS.name(),
];
const INDEXES: &[&str] = &[INSTANCES_BY_HOST.name(), FLOATING_BY_ID.name()];
/// Indexes of older schemas, dropped when a file is opened: `instances_by_project` (up to 3; the project's list
/// order replaces it).
const DROPPED_INDEXES: &[&str] = &["instances_by_project"];

/// Creates missing tables and checks (or records) the schema version.
pub(crate) fn prepare(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    let found;
    {
        let mut meta = txn.open_table(META)?;
        found = meta.get("schema_version")?.map(|v| v.value());
        match found {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.display().to_string(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) if found == SCHEMA_VERSION => {}
            // Older files: the tables added since are created below, and `migrate` fills them.
            Some(_) | None => drop(meta.insert("schema_version", SCHEMA_VERSION)?),
        }
        for name in TABLES {
            txn.open_table(TableDefinition::<&[u8], &[u8]>::new(name))?;
        }
        for name in INDEXES {
            txn.open_multimap_table(redb::MultimapTableDefinition::<&[u8], &[u8]>::new(name))?;
        }
    }
    if let Some(found) = found.filter(|v| *v < SCHEMA_VERSION) {
        let mut tx = WriteTx::new(&txn, Vec::new());
        migrate(&mut tx, found)?;
        drop(tx);
        if found < 4 {
            for name in DROPPED_INDEXES {
                txn.delete_multimap_table(redb::MultimapTableDefinition::<&[u8], &[u8]>::new(name))?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

/// Fills the tables added since schema `found` from the records an older nimbus kept.
fn migrate(tx: &mut WriteTx<'_>, found: u32) -> Result<(), StoreError> {
    if found < 3 {
        let instances = tx.scan(&INSTANCES)?;
        for (host, load) in &HostLoad::count(instances.iter().map(|(_, i)| i)) {
            tx.put(&HOST_LOADS, host, load)?;
        }
    }
    if found < 4 {
        for (_, instance) in tx.scan(&INSTANCES)? {
            list_instance_in(tx, &instance)?;
        }
    }
    if found < 5 {
        for (_, network) in tx.scan(&NETWORKS)? {
            tx.put(&NETWORK_CHOICES, &NetworkChoice::of(&network), &network.id)?;
        }
    }
    if found < 6 {
        for (address, ip) in tx.scan(&FLOATING_IPS)? {
            if let Some(project) = ip.project {
                tx.put(&FLOATING_HELD, &Pair(project, address), &ip.id)?;
            }
        }
    }
    if found < 7 {
        for (key, row) in tx.scan(&FIXED_IPS)? {
            if let Some(at) = row.released_at.filter(|_| !row.allocated) {
                tx.put(&FIXED_RELEASES, &Pair(at, key.clone()), &key.0)?;
            }
        }
    }
    if found < 8 {
        for (key, token) in tx.scan(&TOKENS)? {
            tx.put(&TOKEN_EXPIRY, &Pair(token.expires_at, key), &token.user)?;
        }
    }
    if found < 10 {
        for (_, mut instance) in tx.scan(&INSTANCES)? {
            instance.security_groups = vec![default_security_group_in(tx, instance.project)?.id];
            tx.put(&INSTANCES, &instance.id, &instance)?;
            join_security_groups_in(tx, &instance)?;
        }
    }
    if found < 13 {
        for (_, instance) in tx.scan(&INSTANCES)? {
            for interface in &instance.interfaces {
                tx.put(&MACS, &interface.mac, &interface.id)?;
            }
        }
    }
    Ok(())
}

/// The project's default security group, made now if it has none yet.
pub fn default_security_group_in(tx: &mut WriteTx<'_>, project: ProjectId) -> Result<SecurityGroup, StoreError> {
    let name = Pair(project, SecurityGroup::DEFAULT_NAME.to_string());
    if let Some(id) = tx.get(&SECURITY_GROUP_NAMES, &name)?
        && let Some(group) = tx.get(&SECURITY_GROUPS, &id)?
    {
        return Ok(group);
    }
    let group = SecurityGroup::default_for(project, now_ms());
    put_security_group_in(tx, None, &group)?;
    Ok(group)
}

/// Records a security group (`old` is what it was, if it existed), keeping its name and its rules' ids in
/// step.
pub fn put_security_group_in(
    tx: &mut WriteTx<'_>,
    old: Option<&SecurityGroup>,
    group: &SecurityGroup,
) -> Result<(), StoreError> {
    if let Some(old) = old {
        if old.name != group.name {
            tx.delete(&SECURITY_GROUP_NAMES, &Pair(old.project, old.name.clone()))?;
        }
        for rule in old.rules.iter().filter(|r| !group.rules.iter().any(|kept| kept.id == r.id)) {
            tx.delete(&SECURITY_RULES, &rule.id)?;
        }
    }
    tx.put(&SECURITY_GROUP_NAMES, &Pair(group.project, group.name.clone()), &group.id)?;
    for rule in &group.rules {
        tx.put(&SECURITY_RULES, &rule.id, &group.id)?;
    }
    tx.put(&SECURITY_GROUPS, &group.id, group)
}

/// Removes a security group, its name and its rules' ids. Its members must have left it.
pub fn delete_security_group_in(tx: &mut WriteTx<'_>, group: &SecurityGroup) -> Result<(), StoreError> {
    tx.delete(&SECURITY_GROUP_NAMES, &Pair(group.project, group.name.clone()))?;
    for rule in &group.rules {
        tx.delete(&SECURITY_RULES, &rule.id)?;
    }
    tx.delete(&SECURITY_GROUPS, &group.id).map(drop)
}

/// Makes the instance a member of each of its security groups.
pub fn join_security_groups_in(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<(), StoreError> {
    for group in &instance.security_groups {
        tx.put(&SECURITY_GROUP_MEMBERS, &Pair(*group, instance.id), &instance.id)?;
    }
    Ok(())
}

/// Takes the instance out of each of its security groups.
pub fn leave_security_groups_in(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<(), StoreError> {
    for group in &instance.security_groups {
        tx.delete(&SECURITY_GROUP_MEMBERS, &Pair(*group, instance.id))?;
    }
    Ok(())
}

/// Puts an instance in the list orders (all projects' and its project's).
pub fn list_instance_in(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<(), StoreError> {
    let at = NewestFirst::of(instance);
    tx.put(&INSTANCE_LIST, &at, &instance.project)?;
    tx.put(&PROJECT_INSTANCE_LIST, &Pair(instance.project, at), &instance.id)
}

/// Takes an instance out of the list orders.
pub fn unlist_instance_in(tx: &mut WriteTx<'_>, instance: &Instance) -> Result<(), StoreError> {
    let at = NewestFirst::of(instance);
    tx.delete(&INSTANCE_LIST, &at)?;
    tx.delete(&PROJECT_INSTANCE_LIST, &Pair(instance.project, at)).map(drop)
}

/// Records a network, keeping its place in `network_choices` in step.
pub fn put_network_in(tx: &mut WriteTx<'_>, network: &Network) -> Result<(), StoreError> {
    if let Some(old) = tx.get(&NETWORKS, &network.id)? {
        tx.delete(&NETWORK_CHOICES, &NetworkChoice::of(&old))?;
    }
    tx.put(&NETWORK_CHOICES, &NetworkChoice::of(network), &network.id)?;
    tx.put(&NETWORKS, &network.id, network)
}

/// Removes a network and its place in `network_choices`; returns it.
pub fn delete_network_in(tx: &mut WriteTx<'_>, id: &NetworkId) -> Result<Option<Network>, StoreError> {
    let old = tx.delete(&NETWORKS, id)?;
    if let Some(old) = &old {
        tx.delete(&NETWORK_CHOICES, &NetworkChoice::of(old))?;
    }
    Ok(old)
}

/// The entries of a table keyed by time that are due by `until`, oldest first, at most `cap` of them (the
/// reclaim's releases, the purge's expiries): a pass reads what is due, never the whole table.
pub fn due<K: KeyCodec, V: Record>(
    r: &impl Reads,
    table: &Table<Pair<Millis, K>, V>,
    until: Millis,
    cap: usize,
) -> Result<Vec<Pair<Millis, K>>, StoreError> {
    let mut due = Vec::new();
    r.visit_keys(table, &[], None, |entry: Pair<Millis, K>| {
        let take = entry.0 <= until && due.len() < cap;
        if take {
            due.push(entry);
        }
        Ok(take)
    })?;
    Ok(due)
}

/// Records a token (under the key its secret hashes to), with its expiry.
pub fn put_token_in(tx: &mut WriteTx<'_>, key: &str, token: &Token) -> Result<(), StoreError> {
    tx.put(&TOKEN_EXPIRY, &Pair(token.expires_at, key.to_string()), &token.user)?;
    tx.put(&TOKENS, &key.to_string(), token)
}

/// Removes a token and its expiry; returns it.
pub fn delete_token_in(tx: &mut WriteTx<'_>, key: &str) -> Result<Option<Token>, StoreError> {
    let token = tx.delete(&TOKENS, &key.to_string())?;
    if let Some(t) = &token {
        tx.delete(&TOKEN_EXPIRY, &Pair(t.expires_at, key.to_string()))?;
    }
    Ok(token)
}

/// Records a floating IP, keeping `floating_held` in step with who holds it.
pub fn put_floating_ip_in(tx: &mut WriteTx<'_>, ip: &FloatingIp) -> Result<(), StoreError> {
    let address = u32::from(ip.address);
    let before = tx.get(&FLOATING_IPS, &address)?.and_then(|old| old.project);
    if before != ip.project {
        if let Some(old) = before {
            tx.delete(&FLOATING_HELD, &Pair(old, address))?;
        }
        if let Some(new) = ip.project {
            tx.put(&FLOATING_HELD, &Pair(new, address), &ip.id)?;
        }
    }
    tx.put(&FLOATING_IPS, &address, ip)
}

/// The floating IPs `project` holds, or (`None`) every held one, by address.
pub fn held_floating_ips(r: &impl Reads, project: Option<ProjectId>) -> Result<Vec<FloatingIp>, StoreError> {
    let mut addresses: Vec<u32> = match project {
        Some(p) => r.scan_prefix(&FLOATING_HELD, &Pair::<ProjectId, u32>::prefix(&p))?,
        None => r.scan(&FLOATING_HELD)?,
    }
    .into_iter()
    .map(|(Pair(_, address), _)| address)
    .collect();
    addresses.sort_unstable();
    let mut out = Vec::with_capacity(addresses.len());
    for address in addresses {
        out.extend(r.get(&FLOATING_IPS, &address)?);
    }
    Ok(out)
}

/// The first network of `owner`'s choice, in `network_choices` order.
pub fn first_network_of(r: &impl Reads, owner: NetworkOwner) -> Result<Option<Network>, StoreError> {
    let mut first = None;
    r.visit_keys(&NETWORK_CHOICES, &owner.prefix(), None, |choice| {
        first = Some(choice.id);
        Ok(false)
    })?;
    match first {
        Some(id) => r.get(&NETWORKS, &id),
        None => Ok(None),
    }
}

/// Rewrites the recorded schema version; only tests use it, to fake a file from a newer nimbus.
#[doc(hidden)]
pub fn force_schema_version(path: &Path, version: u32) -> Result<(), StoreError> {
    let db = Database::create(path).map_err(StoreError::redb)?;
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert("schema_version", version)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use nimbus_protocol::ids::{FlavorId, FloatingIpId, ImageId, InstanceId, NetworkId, ProjectId, UserId};

    use super::*;
    use crate::records::{FlavorSnapshot, NetworkMode, PowerState, VmState};
    use crate::store::Store;

    fn instance(host: Option<&str>, vcpus: u32) -> Instance {
        Instance {
            id: InstanceId::generate(),
            name: "vm".into(),
            project: ProjectId::generate(),
            user: UserId::generate(),
            flavor: FlavorSnapshot { id: FlavorId("1".into()), name: "f".into(), vcpus, ram_mb: 512, disk_gb: 1 },
            image: ImageId::generate(),
            host: host.map(HostId::from),
            vm_state: VmState::Active,
            task_state: None,
            power_state: PowerState::Running,
            interfaces: Vec::new(),
            fault: None,
            tried_hosts: Vec::new(),
            created_at: 0,
            updated_at: 0,
            launched_at: None,
            key: None,
            security_groups: Vec::new(),
            metadata: Default::default(),
            requested_nics: Default::default(),
            description: None,
            reservation_id: String::new(),
            launch_index: 0,
            tags: Vec::new(),
            requested_tags: Vec::new(),
            nic_tags: Default::default(),
        }
    }

    /// Closes `store` and opens its file again as a nimbus would that wrote it at schema `version`.
    fn reopened_as_schema(store: Store, path: &Path, version: u32) -> Store {
        store.close();
        drop(store);
        force_schema_version(path, version).unwrap();
        Store::open(path).unwrap()
    }

    fn network(mode: NetworkMode, project: Option<ProjectId>, vlan: Option<u16>, created_at: u64) -> Network {
        Network {
            id: NetworkId::generate(),
            label: "n".into(),
            mode,
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            bridge: "br".into(),
            bridge_interface: None,
            vlan,
            dhcp_server: None,
            vpn: None,
            vpn_clients: 0,
            dns1: None,
            dns2: None,
            multi_host: false,
            allowed_start: None,
            allowed_end: None,
            project,
            created_at,
            subnet_name: String::new(),
            mtu: None,
        }
    }

    #[tokio::test]
    async fn the_network_choices_follow_every_put_and_delete_and_an_older_file_gets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let project = ProjectId::generate();
        let (old_flat, new_flat) =
            (network(NetworkMode::Flat, None, None, 1), network(NetworkMode::Flat, None, None, 2));
        let vlans = [network(NetworkMode::Vlan, None, Some(101), 0), network(NetworkMode::Vlan, None, Some(100), 5)];
        let all = [old_flat.clone(), new_flat.clone(), vlans[0].clone(), vlans[1].clone()];
        // Written as a nimbus of schema 4 did: without the choices.
        store
            .write(move |tx| {
                for n in &all {
                    tx.put(&NETWORKS, &n.id, n)?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let store = reopened_as_schema(store, &path, 4);
        let first = |owner| store.read(|r| first_network_of(r, owner)).unwrap().map(|n| n.id);
        assert_eq!(first(NetworkOwner::Unbound(NetworkMode::Flat)), Some(old_flat.id), "the oldest shared one");
        assert_eq!(first(NetworkOwner::Unbound(NetworkMode::Vlan)), Some(vlans[1].id), "the lowest segment");
        assert_eq!(first(NetworkOwner::Unbound(NetworkMode::FlatDhcp)), None);
        assert_eq!(first(NetworkOwner::Project(project)), None);
        // Binding moves a network from its mode's choices to its project's; a delete takes it out.
        let mut bound = vlans[1].clone();
        bound.project = Some(project);
        let gone = old_flat.id;
        store
            .write(move |tx| {
                put_network_in(tx, &bound)?;
                delete_network_in(tx, &gone).map(drop)
            })
            .await
            .unwrap();
        assert_eq!(first(NetworkOwner::Project(project)), Some(vlans[1].id));
        assert_eq!(first(NetworkOwner::Unbound(NetworkMode::Vlan)), Some(vlans[0].id));
        assert_eq!(first(NetworkOwner::Unbound(NetworkMode::Flat)), Some(new_flat.id));
        assert_eq!(store.read(|r| r.scan(&NETWORK_CHOICES)).unwrap().len(), 3);
    }

    fn floating(address: &str, project: Option<ProjectId>) -> FloatingIp {
        FloatingIp {
            id: FloatingIpId::generate(),
            address: address.parse().unwrap(),
            pool: "public".into(),
            project,
            instance: None,
            fixed_address: None,
            auto_assigned: false,
        }
    }

    #[tokio::test]
    async fn the_held_floating_ips_follow_every_put_and_an_older_file_gets_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let (a, b) = (ProjectId::generate(), ProjectId::generate());
        let ips = [floating("198.18.0.3", Some(a)), floating("198.18.0.1", Some(a)), floating("198.18.0.2", None)];
        let written = ips.clone();
        // Written as a nimbus of schema 5 did: without `floating_held`.
        store
            .write(move |tx| {
                for ip in &written {
                    tx.put(&FLOATING_IPS, &u32::from(ip.address), ip)?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let store = reopened_as_schema(store, &path, 5);
        let held = |project| {
            let ips = store.read(|r| held_floating_ips(r, project)).unwrap();
            ips.iter().map(|ip| ip.address.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(held(Some(a)), ["198.18.0.1", "198.18.0.3"], "by address");
        assert!(held(Some(b)).is_empty());
        // Moving one to b, releasing the other, giving the free one to b.
        let (mut moved, mut released, mut taken) = (ips[0].clone(), ips[1].clone(), ips[2].clone());
        (moved.project, released.project, taken.project) = (Some(b), None, Some(b));
        store
            .write(move |tx| {
                for ip in [&moved, &released, &taken] {
                    put_floating_ip_in(tx, ip)?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        assert!(held(Some(a)).is_empty());
        assert_eq!(held(Some(b)), ["198.18.0.2", "198.18.0.3"]);
        assert_eq!(held(None), ["198.18.0.2", "198.18.0.3"]);
    }

    #[tokio::test]
    async fn an_older_file_gets_its_pending_releases_and_token_expiries_listed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let network = NetworkId::generate();
        let row = |n: u8, allocated: bool, released_at: Option<u64>| FixedIp {
            address: std::net::Ipv4Addr::new(10, 0, 0, n),
            instance: None,
            mac: None,
            hostname: None,
            allocated,
            leased: true,
            reserved: false,
            released_at,
        };
        let rows = [row(2, true, None), row(3, false, Some(500)), row(4, false, Some(100))];
        store
            .write(move |tx| {
                for r in &rows {
                    tx.put(&FIXED_IPS, &Pair(network, u32::from(r.address)), r)?;
                }
                let token = Token {
                    user: UserId::generate(),
                    project: ProjectId::generate(),
                    user_epoch: 0,
                    issued_at: 0,
                    expires_at: 7,
                };
                tx.put(&TOKENS, &"k".to_string(), &token)
            })
            .await
            .unwrap();
        let store = reopened_as_schema(store, &path, 6);
        let releases = store.read(|r| r.scan(&FIXED_RELEASES)).unwrap();
        let listed: Vec<(u64, u32)> = releases.iter().map(|(Pair(at, Pair(_, ip)), _)| (*at, *ip)).collect();
        assert_eq!(listed, [(100, 0x0a00_0004), (500, 0x0a00_0003)], "oldest first");
        let expiries = store.read(|r| r.scan(&TOKEN_EXPIRY)).unwrap();
        assert_eq!(expiries.iter().map(|(Pair(at, key), _)| (*at, key.as_str())).collect::<Vec<_>>(), [(7, "k")]);
    }

    #[tokio::test]
    async fn an_older_file_puts_every_instance_in_its_projects_default_group_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let (a, b, c) = (instance(Some("h"), 1), instance(Some("h"), 1), instance(None, 1));
        let b = Instance { project: a.project, ..b };
        let written = [a.clone(), b.clone(), c.clone()];
        store
            .write(move |tx| {
                for i in &written {
                    tx.put(&INSTANCES, &i.id, i)?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let store = reopened_as_schema(store, &path, 9);
        let groups: Vec<SecurityGroup> =
            store.read(|r| r.scan(&SECURITY_GROUPS)).unwrap().into_iter().map(|(_, g)| g).collect();
        assert_eq!(groups.len(), 2, "one default group per project");
        for i in [&a, &b, &c] {
            let read = store.read(|r| r.get(&INSTANCES, &i.id)).unwrap().unwrap();
            let default = groups.iter().find(|g| g.project == i.project).unwrap();
            assert_eq!((default.name.as_str(), read.security_groups.as_slice()), ("default", [default.id].as_slice()));
            let member = store.read(|r| r.get(&SECURITY_GROUP_MEMBERS, &Pair(default.id, i.id))).unwrap();
            assert_eq!(member, Some(i.id));
            let named = store.read(|r| r.get(&SECURITY_GROUP_NAMES, &Pair(i.project, "default".to_string()))).unwrap();
            assert_eq!(named, Some(default.id));
        }
    }

    #[tokio::test]
    async fn a_file_from_before_host_loads_and_list_orders_has_them_made_from_its_instances_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let mut instances = [instance(Some("a"), 1), instance(Some("a"), 2), instance(Some("b"), 4), instance(None, 8)];
        for (n, i) in instances.iter_mut().enumerate() {
            i.created_at = n as u64;
        }
        let newest_first: Vec<InstanceId> = instances.iter().rev().map(|i| i.id).collect();
        let project = instances[3].project;
        store
            .write(move |tx| {
                for i in &instances {
                    tx.put(&INSTANCES, &i.id, i)?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let store = reopened_as_schema(store, &path, 2);
        let loads = store.read(|r| r.scan(&HOST_LOADS)).unwrap();
        let summary: Vec<_> = loads.iter().map(|(h, l)| (h.0.as_str(), l.vcpus, l.ram_mb, l.instances)).collect();
        assert_eq!(summary, [("a", 3, 1024, 2), ("b", 4, 512, 1)]);
        let listed: Vec<InstanceId> =
            store.read(|r| r.scan(&INSTANCE_LIST)).unwrap().iter().map(|(at, _)| at.id).collect();
        assert_eq!(listed, newest_first);
        let in_project = store
            .read(|r| r.scan_prefix(&PROJECT_INSTANCE_LIST, &Pair::<ProjectId, NewestFirst>::prefix(&project)))
            .unwrap();
        assert_eq!(in_project.iter().map(|(_, id)| *id).collect::<Vec<_>>(), [newest_first[0]]);
    }

    #[tokio::test]
    async fn an_older_file_has_its_macs_named_by_port_when_opened() {
        use crate::records::Interface;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let mut vm = instance(Some("h"), 1);
        let nic = |n: u8| Interface {
            id: PortId::generate(),
            network: NetworkId::generate(),
            network_label: "private".into(),
            mac: format!("fa:16:3e:00:00:0{n}"),
            address: format!("10.0.0.{n}").parse().unwrap(),
            floating: Vec::new(),
        };
        vm.interfaces = vec![nic(1), nic(2)];
        let written = vm.clone();
        store
            .write(move |tx| {
                tx.put(&INSTANCES, &written.id, &written)?;
                // Schema 12 kept the instance's id under each MAC.
                for f in &written.interfaces {
                    tx.put(&MACS, &f.mac, &PortId(written.id.0))?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
        let store = reopened_as_schema(store, &path, 12);
        for f in &vm.interfaces {
            assert_eq!(store.read(|r| r.get(&MACS, &f.mac)).unwrap(), Some(f.id));
        }
    }
}
