//! Quotas: limits per project, and usage changed in the same transaction as the resources it counts, so it
//! never drifts and never goes negative.

use nimbus_storage::ids::ProjectId;
use nimbus_storage::records::{Quota, Usage};
use nimbus_storage::schema::{QUOTAS, USAGE};
use nimbus_storage::{Reads, StoreError, WriteTx};

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
pub fn fields(u: &Usage) -> [(&'static str, u64); 5] {
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

pub fn instance_usage(vcpus: u32, ram_mb: u64) -> Usage {
    Usage { instances: 1, cores: u64::from(vcpus), ram_mb, ..Usage::default() }
}
