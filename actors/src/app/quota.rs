//! Quotas: limits per project, and usage changed in the same transaction as the resources it counts, so it
//! never drifts and never goes negative.

use nimbus_protocol::ids::ProjectId;
use nimbus_storage::records::{Quota, Usage};
use nimbus_storage::schema::{QUOTAS, USAGE};
use nimbus_storage::{Reads, StoreError, WriteTx};

use crate::app::App;

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("Quota exceeded for {resource}: requested {requested}, but already used {used} of {limit}.")]
    Exceeded { resource: &'static str, requested: u64, used: u64, limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn quota(r: &impl Reads, project: ProjectId) -> Result<Quota, StoreError> {
    Ok(r.get(&QUOTAS, &project)?.unwrap_or(Quota::DEFAULT))
}

pub fn usage(r: &impl Reads, project: ProjectId) -> Result<Usage, StoreError> {
    Ok(r.get(&USAGE, &project)?.unwrap_or_default())
}

/// The usage by the names the quota APIs give the fields.
fn fields(u: &Usage) -> [(&'static str, u64); 5] {
    [
        ("instances", u.instances),
        ("cores", u.cores),
        ("ram", u.ram_mb),
        ("floating_ips", u.floating_ips),
        ("fixed_ips", u.fixed_ips),
    ]
}

fn limits(q: &Quota) -> [Option<u64>; 5] {
    [q.instances, q.cores, q.ram_mb, q.floating_ips, q.fixed_ips]
}

/// Adds `delta` to the project's usage, unless that would pass a limit.
pub fn charge_in(tx: &mut WriteTx<'_>, project: ProjectId, delta: Usage) -> Result<(), QuotaError> {
    let quota = quota(tx, project)?;
    let used = usage(tx, project)?;
    for (((resource, now), (_, add)), limit) in fields(&used).into_iter().zip(fields(&delta)).zip(limits(&quota)) {
        if let Some(limit) = limit
            && add > 0
            && now + add > limit
        {
            return Err(QuotaError::Exceeded { resource, requested: add, used: now, limit });
        }
    }
    let total = Usage {
        instances: used.instances + delta.instances,
        cores: used.cores + delta.cores,
        ram_mb: used.ram_mb + delta.ram_mb,
        floating_ips: used.floating_ips + delta.floating_ips,
        fixed_ips: used.fixed_ips + delta.fixed_ips,
    };
    tx.put(&USAGE, &project, &total)?;
    Ok(())
}

/// Takes `delta` off the project's usage (never below zero).
pub fn refund_in(tx: &mut WriteTx<'_>, project: ProjectId, delta: Usage) -> Result<(), StoreError> {
    let used = usage(tx, project)?;
    let total = Usage {
        instances: used.instances.saturating_sub(delta.instances),
        cores: used.cores.saturating_sub(delta.cores),
        ram_mb: used.ram_mb.saturating_sub(delta.ram_mb),
        floating_ips: used.floating_ips.saturating_sub(delta.floating_ips),
        fixed_ips: used.fixed_ips.saturating_sub(delta.fixed_ips),
    };
    tx.put(&USAGE, &project, &total)
}

/// What `count` instances of a flavor use.
pub fn instances_usage(count: u32, vcpus: u32, ram_mb: u64) -> Usage {
    let count = u64::from(count);
    Usage { instances: count, cores: count * u64::from(vcpus), ram_mb: count * ram_mb, ..Usage::default() }
}

/// A project's limits and its usage (`os-quota-sets`).
pub fn show(app: &App, project: ProjectId) -> Result<(Quota, Usage), StoreError> {
    app.store.read(|r| Ok((quota(r, project)?, usage(r, project)?)))
}

/// Changes some of a project's limits (`None` leaves a limit as it is; `Some(None)` is unlimited).
pub async fn update(app: &App, project: ProjectId, changes: QuotaChanges) -> Result<Quota, StoreError> {
    app.store
        .write(move |tx| {
            let mut q = quota(tx, project)?;
            let QuotaChanges {
                instances,
                cores,
                ram_mb,
                floating_ips,
                fixed_ips,
                key_pairs,
                security_groups,
                security_group_rules,
            } = changes;
            for (limit, change) in [
                (&mut q.instances, instances),
                (&mut q.cores, cores),
                (&mut q.ram_mb, ram_mb),
                (&mut q.floating_ips, floating_ips),
                (&mut q.fixed_ips, fixed_ips),
                (&mut q.key_pairs, key_pairs),
                (&mut q.security_groups, security_groups),
                (&mut q.security_group_rules, security_group_rules),
            ] {
                if let Some(new) = change {
                    *limit = new;
                }
            }
            tx.put(&QUOTAS, &project, &q)?;
            Ok(q)
        })
        .await
}

/// New limits (see [`update`]): `None` leaves a limit as it is; `Some(None)` is unlimited.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuotaChanges {
    pub instances: Option<Option<u64>>,
    pub cores: Option<Option<u64>>,
    pub ram_mb: Option<Option<u64>>,
    pub floating_ips: Option<Option<u64>>,
    pub fixed_ips: Option<Option<u64>>,
    pub key_pairs: Option<Option<u64>>,
    pub security_groups: Option<Option<u64>>,
    pub security_group_rules: Option<Option<u64>>,
}

/// Makes the project's quota unlimited (the operator's own project).
pub async fn set_unlimited(app: &App, project: ProjectId) -> Result<(), StoreError> {
    app.store.write(move |tx| tx.put(&QUOTAS, &project, &Quota::UNLIMITED)).await
}
