//! Compute hosts: the reports their agents send, what each host has in use, and whether it counts as up. The
//! one place host usage and liveness are derived (the scheduler, the hypervisor and service APIs and the
//! cluster status all use it).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use nimbus_protocol::compute::ComputeClient;
use nimbus_protocol::failure::Failure;
use nimbus_protocol::ids::{HostId, InstanceId};
use nimbus_protocol::scheduler::{HostReport, Placement, Restore};
use nimbus_storage::records::{AllocationCursor, Host, HostLoad, Instance, VmState, now_ms};
use nimbus_storage::schema::{COUNTERS, HOST_LOADS, HOSTS, INSTANCES, INSTANCES_BY_HOST};
use nimbus_storage::{Reads, StoreError, Watch, WriteTx};

use crate::app::App;
use crate::app::error::CloudError;
use crate::app::specs::instance_spec;
use crate::instance_state::{power_action, restore_action};
use crate::timing::Timing;

/// A host and what the instances placed on it use of it, as the store shows them.
#[derive(Clone, Debug)]
pub struct HostUsage {
    pub host: Host,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub instances: usize,
}

/// The instances placed on `host`, in the order of their ids.
pub fn instances_on(app: &App, host: &HostId) -> Result<Vec<Instance>, StoreError> {
    app.store.read(|r| instances_on_in(r, host))
}

pub(crate) fn instances_on_in(r: &impl Reads, host: &HostId) -> Result<Vec<Instance>, StoreError> {
    let ids = r.index_get(&INSTANCES_BY_HOST, host)?;
    Ok(ids.iter().map(|id| r.get(&INSTANCES, id)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect())
}

/// The uptime line of `host`'s machine, from its agent.
pub async fn uptime(app: &App, host: &HostId) -> Result<String, CloudError> {
    ComputeClient::new(app.ns(), host).uptime(app.timing().call).await.map_err(|e| CloudError::Unavailable {
        what: format!("The compute agent of {host} did not answer"),
        source: Failure::of(&e),
    })
}

/// Whether each of `hosts` counts as up (a host with no record does not).
pub fn up_states(app: &App, hosts: impl IntoIterator<Item = HostId>) -> Result<BTreeMap<HostId, bool>, StoreError> {
    let timing = app.timing().clone();
    app.store.read(|r| {
        hosts
            .into_iter()
            .map(|h| Ok((h.clone(), r.get(&HOSTS, &h)?.is_some_and(|host| is_up(&host, &timing)))))
            .collect()
    })
}

/// Whether the host reported recently enough to count as up, and the operator has not forced it down.
pub fn is_up(host: &Host, timing: &Timing) -> bool {
    !host.forced_down && now_ms() <= down_at(host, timing)
}

/// What an operator changes of a host's compute service (`os-services`).
#[derive(Clone, Debug, Default)]
pub struct ServiceChange {
    /// Enabled (the scheduler places on it) or disabled.
    pub enabled: Option<bool>,
    /// Why it is disabled (`Some(None)` forgets the reason).
    pub disabled_reason: Option<Option<String>>,
    /// Forced down, or no longer.
    pub forced_down: Option<bool>,
}

/// Changes the compute service of host `name`; returns its record after the change.
pub async fn change_service(app: &App, name: &str, change: ServiceChange) -> Result<Host, CloudError> {
    if let Some(reason) = change.disabled_reason.as_ref().and_then(|r| r.as_deref())
        && (reason.chars().count() > 255 || reason.chars().any(char::is_control))
    {
        return Err(CloudError::BadRequest(
            "A disabled_reason is at most 255 characters, none of them control characters.".into(),
        ));
    }
    let host = HostId(name.to_string());
    app.store
        .write(move |tx| {
            let mut record = tx
                .get(&HOSTS, &host)?
                .ok_or_else(|| CloudError::NotFound(format!("Host {host} could not be found.")))?;
            if let Some(enabled) = change.enabled {
                record.enabled = enabled;
                if enabled {
                    record.disabled_reason = None;
                }
            }
            if let Some(reason) = change.disabled_reason {
                record.disabled_reason = reason;
            }
            if let Some(forced) = change.forced_down {
                record.forced_down = forced;
            }
            tx.put(&HOSTS, &host, &record)?;
            Ok(record)
        })
        .await
}

/// When (ms since the epoch) the host counts as down unless it reports again.
pub fn down_at(host: &Host, timing: &Timing) -> u64 {
    host.last_seen.saturating_add(timing.service_down_after.as_millis() as u64)
}

/// A watch of the hosts whose record or load later commits write, for views of the hosts kept in step.
pub async fn watch(app: &App) -> Result<Watch<HostId>, StoreError> {
    app.store.watch(&[HOSTS.name(), HOST_LOADS.name()]).await
}

/// Where each instance asked about is placed (`None`: not on a host yet; missing: no such instance).
pub type Placements = HashMap<InstanceId, Option<HostId>>;

/// Every host with its usage, in host-number order (one read per host: the loads are kept with each
/// placement).
pub fn usage(app: &App) -> Result<Vec<HostUsage>, StoreError> {
    app.store.read(usage_in)
}

/// Every host with its usage, and where each of `instances` is placed, from one snapshot.
pub fn usage_and_placements(
    app: &App,
    instances: impl IntoIterator<Item = InstanceId>,
) -> Result<(Vec<HostUsage>, Placements), StoreError> {
    app.store.read(|r| Ok((usage_in(r)?, placements_in(r, instances)?)))
}

/// The named hosts with their usage (`None`: no such host), and where each of `instances` is placed, from
/// one snapshot: O(log n) a host, for a view kept in step with the hosts that changed.
pub fn usage_of(
    app: &App,
    hosts: &[HostId],
    instances: impl IntoIterator<Item = InstanceId>,
) -> Result<(Vec<Option<HostUsage>>, Placements), StoreError> {
    app.store.read(|r| {
        let mut usage = Vec::with_capacity(hosts.len());
        for name in hosts {
            let host = r.get(&HOSTS, name)?;
            let load = match host {
                Some(_) => r.get(&HOST_LOADS, name)?.unwrap_or_default(),
                None => HostLoad::default(),
            };
            usage.push(host.map(|host| usage_from(host, load)));
        }
        Ok((usage, placements_in(r, instances)?))
    })
}

fn placements_in(r: &impl Reads, instances: impl IntoIterator<Item = InstanceId>) -> Result<Placements, StoreError> {
    let mut placed = HashMap::new();
    for id in instances {
        if let Some(instance) = r.get(&INSTANCES, &id)? {
            placed.insert(id, instance.host);
        }
    }
    Ok(placed)
}

fn usage_from(host: Host, load: HostLoad) -> HostUsage {
    HostUsage {
        host,
        vcpus: u32::try_from(load.vcpus).unwrap_or(u32::MAX),
        ram_mb: load.ram_mb,
        disk_gb: load.disk_gb,
        instances: usize::try_from(load.instances).unwrap_or(usize::MAX),
    }
}

fn usage_in(r: &impl Reads) -> Result<Vec<HostUsage>, StoreError> {
    let loads: HashMap<HostId, HostLoad> = r.scan(&HOST_LOADS)?.into_iter().collect();
    let mut hosts: Vec<HostUsage> = r
        .scan(&HOSTS)?
        .into_iter()
        .map(|(name, host)| {
            let load = loads.get(&name).copied().unwrap_or_default();
            usage_from(host, load)
        })
        .collect();
    hosts.sort_by_key(|u| u.host.number);
    Ok(hosts)
}

/// The number of a new host. A store of schema 1 has no counter yet: its hosts are counted once.
fn next_host_number(tx: &mut WriteTx<'_>) -> Result<u32, StoreError> {
    let key = "host".to_string();
    let next = match tx.get(&COUNTERS, &key)? {
        Some(counter) => counter.next,
        None => tx.scan(&HOSTS)?.iter().map(|(_, h)| h.number).max().unwrap_or(0) + 1,
    };
    tx.put(&COUNTERS, &key, &AllocationCursor { next: next + 1 })?;
    Ok(next)
}

/// Records a host's report: creates or refreshes its record, keeping its number and the operator's enabled
/// flag, and marks it up. Returns what the cloud places on it. A report that changes nothing the store
/// shows costs no write while the stored record still counts as up, and the refresh of an unchanged record
/// shares a commit with others and is not waited for (see [`report_write`]).
pub async fn record_report(app: &App, report: HostReport) -> Result<Placement, StoreError> {
    let (write, placement) = app.store.read(|r| {
        let write = report_write(r.get(&HOSTS, &report.name)?.as_ref(), &report, now_ms(), app.timing());
        Ok::<_, StoreError>((write, placement_in(r, &report.name, report.restoring)?))
    })?;
    match write {
        ReportWrite::Nothing => {}
        ReportWrite::Record => write_record(app, report, Duration::ZERO).await?,
        ReportWrite::Refresh => {
            // The agent needs the placement, read above, not the refresh: a refresh that fails leaves the
            // record due, and the next report, an interval later, writes it again.
            let (app, wait) = (app.clone(), REFRESH_WAIT.min(Duration::from_millis(report.report_interval_ms)));
            tokio::spawn(async move {
                let host = report.name.clone();
                match write_record(&app, report, wait).await {
                    // The store is closing with the process: there is nothing left to keep up.
                    Ok(()) | Err(StoreError::WriterGone) => {}
                    Err(e) => {
                        tracing::warn!(%host, cause = %e, "refreshing the host's record; the next report tries again")
                    }
                }
            });
        }
    }
    Ok(placement)
}

/// Writes the record a report shows, its commit starting within `wait`.
async fn write_record(app: &App, report: HostReport, wait: Duration) -> Result<(), StoreError> {
    app.store
        .write_within(wait, move |tx| {
            let existing = tx.get(&HOSTS, &report.name)?;
            let number = match &existing {
                Some(host) => host.number,
                None => next_host_number(tx)?,
            };
            let record = Host {
                name: report.name.clone(),
                number,
                vcpus: report.capacity.vcpus,
                ram_mb: report.capacity.ram_mb,
                disk_gb: report.capacity.disk_gb,
                hypervisor_type: report.hypervisor_type,
                host_ip: report.host_ip,
                node: report.node,
                node_address: report.node_address,
                enabled: existing.as_ref().is_none_or(|h| h.enabled),
                disabled_reason: existing.as_ref().and_then(|h| h.disabled_reason.clone()),
                forced_down: existing.as_ref().is_some_and(|h| h.forced_down),
                last_seen: now_ms(),
            };
            tx.put(&HOSTS, &report.name, &record)
        })
        .await
}

/// How long a refresh of an unchanged host record may wait for a commit to share (at most one report
/// interval): with 10,000 idle hosts, one commit a second instead of hundreds. The record is refreshed while
/// it still has three report intervals to live (see [`report_write`]), so the wait never shows a host down.
const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// What a host's report writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReportWrite {
    /// The stored record shows the report and still counts as up long enough.
    Nothing,
    /// Only the record's `last_seen` moves: the write may wait to share a commit.
    Refresh,
    /// A new host or a changed record: written at once.
    Record,
}

/// What a report must write over the stored record: all of it when the report changes what the record
/// shows; a refresh when the record would not count as up until the agent's next report and the one after
/// it came, so that one lost or late report never shows a live host down. With the default timings, reports
/// every 10 s and hosts counted down after 60 s (Nova's `service_down_time`), three reports in four cost no
/// write. (`service_down_after` is the controller's; the interval is the reporting agent's own.)
fn report_write(stored: Option<&Host>, report: &HostReport, now_ms: u64, timing: &Timing) -> ReportWrite {
    let Some(stored) = stored else { return ReportWrite::Record };
    let changed = stored.vcpus != report.capacity.vcpus
        || stored.ram_mb != report.capacity.ram_mb
        || stored.disk_gb != report.capacity.disk_gb
        || stored.hypervisor_type != report.hypervisor_type
        || stored.host_ip != report.host_ip
        || stored.node != report.node
        || stored.node_address != report.node_address;
    let age = Duration::from_millis(now_ms.saturating_sub(stored.last_seen));
    if changed {
        ReportWrite::Record
    } else if age + 3 * Duration::from_millis(report.report_interval_ms) > timing.service_down_after {
        ReportWrite::Refresh
    } else {
        ReportWrite::Nothing
    }
}

/// The instances placed on a host, and when it is restoring, the specs of those it must run again.
fn placement_in(r: &impl Reads, host: &HostId, restoring: bool) -> Result<Placement, StoreError> {
    let instances = r.index_get(&INSTANCES_BY_HOST, host)?;
    let mut restore = Vec::new();
    if restoring {
        for id in &instances {
            // Settled, or under a power action (its conductor then repeats the action on what runs again).
            let settled = r.get(&INSTANCES, id)?.filter(|i| {
                matches!(i.vm_state, VmState::Active | VmState::Stopped | VmState::Paused | VmState::Suspended)
                    && i.task_state.is_none_or(|t| power_action(t).is_some())
            });
            if let Some(instance) = settled {
                let then = restore_action(instance.vm_state);
                restore.push(Restore { spec: instance_spec(r, &instance)?, then });
            }
        }
    }
    Ok(Placement { instances, restore })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use nimbus_protocol::compute::Capacity;
    use nimbus_runtime::Namespace;
    use nimbus_storage::Store;

    use super::*;

    /// A fake host's report, with the default capacity.
    pub(crate) fn report(name: &str) -> HostReport {
        HostReport {
            name: HostId(name.into()),
            capacity: Capacity::default(),
            hypervisor_type: "fake".into(),
            host_ip: Ipv4Addr::LOCALHOST,
            node: "local".into(),
            node_address: None,
            restoring: false,
            report_interval_ms: 10_000,
        }
    }

    fn numbers(app: &App) -> Vec<(String, u32)> {
        let hosts = app.store().read(|r| r.scan(&HOSTS)).unwrap();
        hosts.into_iter().map(|(id, h)| (id.0, h.number)).collect()
    }

    #[tokio::test]
    async fn new_hosts_are_numbered_by_a_counter_that_an_older_store_gets_on_first_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("nimbus.redb")).unwrap();
        let app = App::new(store, Namespace::new("hosts-test"), Timing::default(), false);
        for name in ["a", "b", "c", "b"] {
            record_report(&app, report(name)).await.unwrap();
        }
        assert_eq!(numbers(&app), [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);
        // A store written before the counter existed: its hosts are counted once, then the counter goes on.
        app.store().write(|tx| tx.delete(&COUNTERS, &"host".to_string()).map(drop)).await.unwrap();
        record_report(&app, report("d")).await.unwrap();
        record_report(&app, report("e")).await.unwrap();
        assert_eq!(numbers(&app)[3..], [("d".into(), 4), ("e".into(), 5)]);
    }

    #[test]
    fn a_report_is_written_at_once_when_it_changes_the_record_and_refreshed_when_it_would_soon_count_as_down() {
        // Reports every 10 s, down after 60 s (the defaults): a record up to 30 s old is still up when the
        // report after next comes, even if the next one is lost.
        let timing = Timing::default();
        let stored = |last_seen| Host {
            name: HostId("h".into()),
            number: 1,
            vcpus: Capacity::default().vcpus,
            ram_mb: Capacity::default().ram_mb,
            disk_gb: Capacity::default().disk_gb,
            hypervisor_type: "fake".into(),
            host_ip: Ipv4Addr::LOCALHOST,
            node: "local".into(),
            node_address: None,
            enabled: true,
            last_seen,
            disabled_reason: None,
            forced_down: false,
        };
        let now = 1_000_000;
        let same = report("h");
        let mut bigger = report("h");
        bigger.capacity.vcpus += 1;
        let mut moved = report("h");
        moved.node_address = Some("10.0.0.2:4000".into());
        let mut slower = report("h");
        slower.report_interval_ms = 25_000;
        let cases = [
            ("unchanged, just written", &same, Some(now), ReportWrite::Nothing),
            ("unchanged, 30 s old", &same, Some(now - 30_000), ReportWrite::Nothing),
            ("unchanged, 30.001 s old", &same, Some(now - 30_001), ReportWrite::Refresh),
            ("unchanged, from the future (clock step)", &same, Some(now + 5_000), ReportWrite::Nothing),
            ("more vCPUs", &bigger, Some(now), ReportWrite::Record),
            ("more vCPUs, 40 s old", &bigger, Some(now - 40_000), ReportWrite::Record),
            ("another cluster address", &moved, Some(now), ReportWrite::Record),
            ("an agent that reports every 25 s, 10 s old", &slower, Some(now - 10_000), ReportWrite::Refresh),
            ("a new host", &same, None, ReportWrite::Record),
        ];
        for (case, report, last_seen, expected) in cases {
            let stored = last_seen.map(stored);
            assert_eq!(report_write(stored.as_ref(), report, now, &timing), expected, "{case}");
        }
        // Down after 30 s: every report an interval after the last is written.
        let strict = Timing { service_down_after: Duration::from_secs(30), ..Timing::default() };
        assert_eq!(report_write(Some(&stored(now - 10_000)), &same, now, &strict), ReportWrite::Refresh);
    }
}
