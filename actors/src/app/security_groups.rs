//! Security groups: each project's groups (names unique in the project, a `default` group made on first use
//! and never deleted), their rules, and which instances are in which; each change is one transaction.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use nimbus_protocol::firewall::{FilterRule, Flow, HostFirewall, Peer, Protocol};
use nimbus_protocol::ids::{HostId, InstanceId, ProjectId, SecurityGroupId, SecurityRuleId};
use nimbus_storage::records::{Direction, Instance, IpProtocol, Remote, SecurityGroup, SecurityRule, now_ms};
use nimbus_storage::schema::{
    self, INSTANCES, SECURITY_GROUP_MEMBERS, SECURITY_GROUP_NAMES, SECURITY_GROUPS, SECURITY_RULES,
};
use nimbus_storage::{Pair, Reads, StoreError, Watch, WriteTx};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::{hosts, quota};
use crate::names::name_problem;
use crate::security_rules::{RuleRequest, rule_from};

/// Who asks: their project, and whether they may see every project's groups.
#[derive(Clone, Copy, Debug)]
pub struct Asker {
    pub project: ProjectId,
    pub admin: bool,
}

impl Asker {
    fn sees(&self, group: &SecurityGroup) -> bool {
        group.project == self.project || self.admin
    }
}

fn not_found(id: impl std::fmt::Display) -> CloudError {
    CloudError::NotFound(format!("Security group {id} could not be found."))
}

/// The longest description a group keeps (nova-network's limit).
const MAX_DESCRIPTION: usize = 255;

fn check_text(name: &str, description: &str) -> Result<(), CloudError> {
    if let Some(problem) = name_problem("security group", name) {
        return Err(CloudError::BadRequest(problem));
    }
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(CloudError::BadRequest(format!(
            "A security group description is at most {MAX_DESCRIPTION} characters."
        )));
    }
    Ok(())
}

/// The project's groups by name, its default group made first if it has none yet.
pub async fn list_for_project(app: &App, project: ProjectId) -> Result<Vec<SecurityGroup>, CloudError> {
    let has_default = app.store.read(|r| {
        r.get(&SECURITY_GROUP_NAMES, &Pair(project, SecurityGroup::DEFAULT_NAME.to_string())).map(|id| id.is_some())
    })?;
    if !has_default {
        app.store.write(move |tx| schema::default_security_group_in(tx, project).map(drop)).await?;
    }
    Ok(app.store.read(|r| groups_of_in(r, project))?)
}

fn groups_of_in(r: &impl Reads, project: ProjectId) -> Result<Vec<SecurityGroup>, StoreError> {
    let names = r.scan_prefix(&SECURITY_GROUP_NAMES, &Pair::<ProjectId, String>::prefix(&project))?;
    Ok(names
        .into_iter()
        .map(|(_, id)| r.get(&SECURITY_GROUPS, &id))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// Every project's groups (an admin's unfiltered list), the caller's default group made first.
pub async fn list_all(app: &App, asker: Asker) -> Result<Vec<SecurityGroup>, CloudError> {
    list_for_project(app, asker.project).await?;
    Ok(app.store.read(|r| r.scan(&SECURITY_GROUPS))?.into_iter().map(|(_, g)| g).collect())
}

/// A group the asker sees, by id (or, within their project, by name: nova's API names groups).
pub fn get(app: &App, asker: Asker, reference: &str) -> Result<SecurityGroup, CloudError> {
    app.store.read(|r| find_in(r, asker, reference))
}

fn find_in(r: &impl Reads, asker: Asker, reference: &str) -> Result<SecurityGroup, CloudError> {
    let id = match reference.parse::<SecurityGroupId>() {
        Ok(id) => Some(id),
        Err(_) => r.get(&SECURITY_GROUP_NAMES, &Pair(asker.project, reference.to_string()))?,
    };
    let group = match id {
        Some(id) => r.get(&SECURITY_GROUPS, &id)?,
        None => None,
    };
    group.filter(|g| asker.sees(g)).ok_or_else(|| not_found(reference))
}

/// Creates a group in `project` with one rule, egress to anywhere (as Neutron makes new groups); counted
/// against the project's limit.
pub async fn create(
    app: &App,
    project: ProjectId,
    name: String,
    description: String,
) -> Result<SecurityGroup, CloudError> {
    check_text(&name, &description)?;
    app.store
        .write(move |tx| {
            // Made first, so `default` is always the project's own default group, never one of its making.
            schema::default_security_group_in(tx, project)?;
            if tx.get(&SECURITY_GROUP_NAMES, &Pair(project, name.clone()))?.is_some() {
                return Err(CloudError::Conflict(format!("Security group {name:?} already exists in this project.")));
            }
            if let Some(limit) = quota::quota(tx, project)?.security_groups {
                let held = count_in(tx, project)?;
                if held >= limit {
                    return Err(CloudError::QuotaExceeded(format!(
                        "Quota exceeded for security_groups: the project has {held} of {limit}."
                    )));
                }
            }
            let now = now_ms();
            let egress = rule_from(RuleRequest { direction: Some("egress".into()), ..RuleRequest::default() })
                .map_err(CloudError::Internal)?;
            let group = SecurityGroup {
                id: SecurityGroupId::generate(),
                project,
                name,
                description,
                rules: vec![egress],
                created_at: now,
                updated_at: now,
            };
            schema::put_security_group_in(tx, None, &group)?;
            Ok(group)
        })
        .await
}

/// Renames a group or changes its description (`None` leaves it); the default group keeps its name.
pub async fn update(
    app: &App,
    asker: Asker,
    id: SecurityGroupId,
    name: Option<String>,
    description: Option<String>,
) -> Result<SecurityGroup, CloudError> {
    app.store
        .write(move |tx| {
            let old = find_in(tx, asker, &id.to_string())?;
            let mut group = old.clone();
            if let Some(name) = name.filter(|n| *n != old.name) {
                if old.name == SecurityGroup::DEFAULT_NAME || name == SecurityGroup::DEFAULT_NAME {
                    return Err(CloudError::Conflict(
                        "The default security group keeps its name, and no other group takes it.".into(),
                    ));
                }
                if tx.get(&SECURITY_GROUP_NAMES, &Pair(old.project, name.clone()))?.is_some() {
                    return Err(CloudError::Conflict(format!(
                        "Security group {name:?} already exists in this project."
                    )));
                }
                group.name = name;
            }
            if let Some(description) = description {
                group.description = description;
            }
            check_text(&group.name, &group.description)?;
            group.updated_at = now_ms();
            schema::put_security_group_in(tx, Some(&old), &group)?;
            Ok(group)
        })
        .await
}

/// Deletes a group no instance is in; the rules of the project's other groups that name it as their remote
/// go with it. The default group stays.
pub async fn delete(app: &App, asker: Asker, id: SecurityGroupId) -> Result<(), CloudError> {
    app.store
        .write(move |tx| {
            let group = find_in(tx, asker, &id.to_string())?;
            if group.name == SecurityGroup::DEFAULT_NAME {
                return Err(CloudError::Conflict("The default security group cannot be deleted.".into()));
            }
            let mut in_use = None;
            tx.visit_keys(
                &SECURITY_GROUP_MEMBERS,
                &Pair::<SecurityGroupId, InstanceId>::prefix(&id),
                None,
                |Pair(_, i)| {
                    in_use = Some(i);
                    Ok(false)
                },
            )?;
            if let Some(instance) = in_use {
                return Err(CloudError::Conflict(format!(
                    "Security group {} is in use by instance {instance}; remove it from its instances first.",
                    group.name
                )));
            }
            for other in groups_of_in(tx, group.project)?.into_iter().filter(|g| g.id != id) {
                let referring = |r: &SecurityRule| r.remote == Remote::Group(id);
                if other.rules.iter().any(referring) {
                    let mut kept = other.clone();
                    kept.rules.retain(|r| !referring(r));
                    kept.updated_at = now_ms();
                    schema::put_security_group_in(tx, Some(&other), &kept)?;
                }
            }
            schema::delete_security_group_in(tx, &group)?;
            Ok(())
        })
        .await
}

/// Adds a rule to a group; its remote group, if any, must be of the same project. The same traffic twice is
/// a conflict, and a group holds at most its project's `security_group_rules`.
pub async fn add_rule(
    app: &App,
    asker: Asker,
    group: SecurityGroupId,
    request: RuleRequest,
) -> Result<(SecurityGroup, SecurityRule), CloudError> {
    let rule = rule_from(request).map_err(CloudError::BadRequest)?;
    app.store
        .write(move |tx| {
            let old = find_in(tx, asker, &group.to_string())?;
            if let Remote::Group(remote) = &rule.remote
                && tx.get(&SECURITY_GROUPS, remote)?.is_none_or(|r| r.project != old.project)
            {
                return Err(CloudError::BadRequest(format!(
                    "Remote security group {remote} is not a group of project {}.",
                    old.project
                )));
            }
            if let Some(same) = old.rules.iter().find(|r| r.same_traffic(&rule)) {
                return Err(CloudError::Conflict(format!(
                    "Security group rule already exists. Rule id is {}.",
                    same.id
                )));
            }
            if let Some(limit) = quota::quota(tx, old.project)?.security_group_rules
                && old.rules.len() as u64 >= limit
            {
                return Err(CloudError::QuotaExceeded(format!(
                    "Quota exceeded for security_group_rules: group {} has {} of {limit}.",
                    old.name,
                    old.rules.len()
                )));
            }
            let mut updated = old.clone();
            updated.rules.push(rule.clone());
            updated.updated_at = now_ms();
            schema::put_security_group_in(tx, Some(&old), &updated)?;
            Ok((updated, rule))
        })
        .await
}

/// A rule the asker sees, with its group.
pub fn get_rule(app: &App, asker: Asker, id: SecurityRuleId) -> Result<(SecurityGroup, SecurityRule), CloudError> {
    app.store.read(|r| rule_in(r, asker, id))
}

fn rule_in(r: &impl Reads, asker: Asker, id: SecurityRuleId) -> Result<(SecurityGroup, SecurityRule), CloudError> {
    let missing = || CloudError::NotFound(format!("Security group rule {id} could not be found."));
    let group = r.get(&SECURITY_RULES, &id)?.ok_or_else(missing)?;
    let group = r.get(&SECURITY_GROUPS, &group)?.filter(|g| asker.sees(g)).ok_or_else(missing)?;
    let rule = group.rules.iter().find(|rule| rule.id == id).cloned().ok_or_else(missing)?;
    Ok((group, rule))
}

pub async fn delete_rule(app: &App, asker: Asker, id: SecurityRuleId) -> Result<(), CloudError> {
    app.store
        .write(move |tx| {
            let (old, _) = rule_in(tx, asker, id)?;
            let mut updated = old.clone();
            updated.rules.retain(|r| r.id != id);
            updated.updated_at = now_ms();
            schema::put_security_group_in(tx, Some(&old), &updated)?;
            Ok(())
        })
        .await
}

/// The groups named (by name or id) for a new instance of `project`, or its default group if none is named;
/// a group the project does not have is a 400.
pub(crate) fn resolve_in(
    tx: &mut WriteTx<'_>,
    project: ProjectId,
    named: &[String],
) -> Result<Vec<SecurityGroupId>, CloudError> {
    let default = schema::default_security_group_in(tx, project)?;
    if named.is_empty() {
        return Ok(vec![default.id]);
    }
    let asker = Asker { project, admin: false };
    let mut ids = Vec::with_capacity(named.len());
    for name in named {
        let group = find_in(tx, asker, name)
            .map_err(|_| CloudError::BadRequest(format!("Security group {name} not found for project {project}.")))?;
        if !ids.contains(&group.id) {
            ids.push(group.id);
        }
    }
    Ok(ids)
}

/// Puts an instance in one more of its project's groups, or takes it out of one (nova's
/// `addSecurityGroup` / `removeSecurityGroup`).
pub async fn set_membership(app: &App, instance: InstanceId, group: String, member: bool) -> Result<(), CloudError> {
    app.store
        .write(move |tx| {
            let old: Instance =
                tx.get(&INSTANCES, &instance)?.ok_or_else(|| CloudError::not_found("Instance", instance))?;
            let mut record = old.clone();
            let asker = Asker { project: record.project, admin: false };
            let found = find_in(tx, asker, &group)?;
            let has = record.security_groups.contains(&found.id);
            match (member, has) {
                (true, true) => {
                    return Err(CloudError::BadRequest(format!(
                        "Security group {group} is already associated with the instance {instance}."
                    )));
                }
                (false, false) => {
                    return Err(CloudError::BadRequest(format!(
                        "Security group {group} is not associated with the instance {instance}."
                    )));
                }
                (true, false) => record.security_groups.push(found.id),
                (false, true) => record.security_groups.retain(|g| *g != found.id),
            }
            schema::leave_security_groups_in(tx, &old)?;
            schema::join_security_groups_in(tx, &record)?;
            record.updated_at = now_ms();
            tx.put(&INSTANCES, &instance, &record)?;
            Ok(())
        })
        .await
}

/// How many security groups the project has.
pub fn count(app: &App, project: ProjectId) -> Result<u64, StoreError> {
    app.store.read(|r| count_in(r, project))
}

fn count_in(r: &impl Reads, project: ProjectId) -> Result<u64, StoreError> {
    let mut n = 0;
    r.visit_keys(&SECURITY_GROUP_NAMES, &Pair::<ProjectId, String>::prefix(&project), None, |_| {
        n += 1;
        Ok(true)
    })?;
    Ok(n)
}

/// The names of these groups (those that still exist), for the server views.
pub fn names(
    app: &App,
    ids: impl IntoIterator<Item = SecurityGroupId>,
) -> Result<HashMap<SecurityGroupId, String>, StoreError> {
    app.store.read(|r| {
        let mut names = HashMap::new();
        for id in ids {
            if let std::collections::hash_map::Entry::Vacant(entry) = names.entry(id)
                && let Some(group) = r.get(&SECURITY_GROUPS, &id)?
            {
                entry.insert(group.name);
            }
        }
        Ok(names)
    })
}

/// A watch of the writes that can change some host's firewall: to instances (their host, addresses and
/// groups) and to groups (their rules).
pub async fn watch_firewalls(app: &App) -> Result<Watch<()>, StoreError> {
    app.store.watch(&[INSTANCES.name(), SECURITY_GROUPS.name()]).await
}

/// The firewall the store implies for each of `hosts`, read in one snapshot. A group's member addresses
/// are read once however many hosts need them.
pub fn host_firewalls(app: &App, hosts: &[HostId]) -> Result<BTreeMap<HostId, HostFirewall>, StoreError> {
    app.store.read(|r| {
        let mut groups: BTreeMap<SecurityGroupId, Option<Vec<FilterRule>>> = BTreeMap::new();
        let mut members: BTreeMap<SecurityGroupId, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        let mut firewalls = BTreeMap::new();
        for host in hosts {
            let mut firewall = HostFirewall::default();
            for instance in hosts::instances_on_in(r, host)? {
                if instance.interfaces.is_empty() {
                    continue;
                }
                for group in &instance.security_groups {
                    let rules = match groups.entry(*group) {
                        Entry::Occupied(known) => known.into_mut(),
                        Entry::Vacant(new) => new
                            .insert(r.get(&SECURITY_GROUPS, group)?.map(|g| g.rules.iter().map(filter_rule).collect())),
                    };
                    if let Some(rules) = rules {
                        firewall.groups.insert(*group, rules.clone());
                    }
                }
                firewall.instances.insert(instance.id, instance.security_groups.clone());
            }
            let peers: BTreeSet<SecurityGroupId> = firewall
                .groups
                .values()
                .flatten()
                .filter_map(|rule| match rule.peer {
                    Peer::Group(group) => Some(group),
                    _ => None,
                })
                .collect();
            for group in peers {
                let addresses = match members.entry(group) {
                    Entry::Occupied(known) => known.into_mut(),
                    Entry::Vacant(new) => new.insert(member_addresses_in(r, group)?),
                };
                firewall.members.insert(group, addresses.clone());
            }
            firewalls.insert(host.clone(), firewall);
        }
        Ok(firewalls)
    })
}

fn member_addresses_in(r: &impl Reads, group: SecurityGroupId) -> Result<BTreeSet<Ipv4Addr>, StoreError> {
    let mut addresses = BTreeSet::new();
    for (_, id) in r.scan_prefix(&SECURITY_GROUP_MEMBERS, &Pair::<SecurityGroupId, InstanceId>::prefix(&group))? {
        if let Some(instance) = r.get(&INSTANCES, &id)? {
            addresses.extend(instance.interfaces.iter().map(|i| i.address));
        }
    }
    Ok(addresses)
}

fn filter_rule(rule: &SecurityRule) -> FilterRule {
    FilterRule {
        flow: match rule.direction {
            Direction::Ingress => Flow::Ingress,
            Direction::Egress => Flow::Egress,
        },
        protocol: rule.protocol.map(|p| match p {
            IpProtocol::Tcp => Protocol::Tcp,
            IpProtocol::Udp => Protocol::Udp,
            IpProtocol::Icmp => Protocol::Icmp,
        }),
        port_min: rule.port_min,
        port_max: rule.port_max,
        peer: match rule.remote {
            Remote::Any => Peer::Any,
            Remote::Cidr(cidr) => Peer::Cidr(cidr),
            Remote::Group(group) => Peer::Group(group),
        },
    }
}
