//! Placement: filters that rule hosts out, a weigher that ranks the rest. Pure code, driven by tests.

use std::collections::BTreeMap;

use nimbus_protocol::ids::HostId;
use nimbus_protocol::scheduler::{Demand, NoValidHost};

/// What the scheduler knows of one host: capacity, what is claimed on it, and its service state.
#[derive(Clone, Debug, PartialEq)]
pub struct HostState {
    pub name: HostId,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub used_vcpus: u32,
    pub used_ram_mb: u64,
    pub used_disk_gb: u64,
    pub enabled: bool,
    pub up: bool,
}

/// How much of each resource may be promised per unit of the real thing (Nova's allocation ratios).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratios {
    pub cpu: f64,
    pub ram: f64,
    pub disk: f64,
}

impl Default for Ratios {
    fn default() -> Self {
        Ratios { cpu: 16.0, ram: 1.5, disk: 1.0 }
    }
}

/// Why a filter ruled a host out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    Disabled,
    Down,
    AlreadyTried,
    Ram,
    Vcpus,
    Disk,
}

impl Rejection {
    fn describe(self) -> &'static str {
        match self {
            Rejection::Disabled => "service disabled",
            Rejection::Down => "service down",
            Rejection::AlreadyTried => "already tried",
            Rejection::Ram => "not enough RAM",
            Rejection::Vcpus => "not enough vCPUs",
            Rejection::Disk => "not enough disk",
        }
    }
}

fn fits(capacity: u64, used: u64, want: u64, ratio: f64) -> bool {
    (used + want) as f64 <= capacity as f64 * ratio
}

/// The filters, in the order Nova runs them; the first that fails names the reason.
pub fn filter(host: &HostState, demand: &Demand, ratios: Ratios) -> Result<(), Rejection> {
    if !host.enabled {
        return Err(Rejection::Disabled);
    }
    if !host.up {
        return Err(Rejection::Down);
    }
    if demand.tried.contains(&host.name) {
        return Err(Rejection::AlreadyTried);
    }
    if !fits(host.ram_mb, host.used_ram_mb, demand.ram_mb, ratios.ram) {
        return Err(Rejection::Ram);
    }
    if !fits(host.vcpus.into(), host.used_vcpus.into(), demand.vcpus.into(), ratios.cpu) {
        return Err(Rejection::Vcpus);
    }
    if !fits(host.disk_gb, host.used_disk_gb, demand.disk_gb, ratios.disk) {
        return Err(Rejection::Disk);
    }
    Ok(())
}

/// The RAM weigher, spreading: the host with the most free (allocatable) RAM first.
pub fn weigh(host: &HostState, ratios: Ratios) -> f64 {
    host.ram_mb as f64 * ratios.ram - host.used_ram_mb as f64
}

/// Picks the best host for `demand`: filters, then the highest weight (ties go to the lower name, so the
/// choice is deterministic).
pub fn select<'h>(hosts: &'h [HostState], demand: &Demand, ratios: Ratios) -> Result<&'h HostState, NoValidHost> {
    let mut rejected: BTreeMap<Rejection, usize> = BTreeMap::new();
    let mut best: Option<(&HostState, f64)> = None;
    for host in hosts {
        match filter(host, demand, ratios) {
            Err(why) => *rejected.entry(why).or_default() += 1,
            Ok(()) => {
                let w = weigh(host, ratios);
                let better = match best {
                    None => true,
                    Some((b, bw)) => w > bw || (w == bw && host.name < b.name),
                };
                if better {
                    best = Some((host, w));
                }
            }
        }
    }
    best.map(|(h, _)| h).ok_or_else(|| {
        let detail = if hosts.is_empty() {
            "There are no compute hosts.".to_string()
        } else {
            let reasons: Vec<String> =
                rejected.iter().map(|(why, n)| format!("{n} host(s): {}", why.describe())).collect();
            format!("Rejected {}.", reasons.join("; "))
        };
        NoValidHost { detail }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hosts as "name:ram_mb/used_ram_mb:vcpus/used_vcpus[:flags]" with flags `off` (disabled), `down`.
    fn hosts(spec: &str) -> Vec<HostState> {
        spec.split_whitespace()
            .map(|h| {
                let parts: Vec<&str> = h.split(':').collect();
                let (ram, used_ram) = parts[1].split_once('/').unwrap();
                let (cpu, used_cpu) = parts[2].split_once('/').unwrap();
                let flags = parts.get(3).copied().unwrap_or("");
                HostState {
                    name: HostId(parts[0].to_string()),
                    ram_mb: ram.parse().unwrap(),
                    used_ram_mb: used_ram.parse().unwrap(),
                    vcpus: cpu.parse().unwrap(),
                    used_vcpus: used_cpu.parse().unwrap(),
                    disk_gb: 1000,
                    used_disk_gb: 0,
                    enabled: flags != "off",
                    up: flags != "down",
                }
            })
            .collect()
    }

    fn check(spec: &str, ram_mb: u64, vcpus: u32, tried: &[&str], expected: &str) {
        let demand = Demand { vcpus, ram_mb, disk_gb: 1, tried: tried.iter().map(|t| HostId(t.to_string())).collect() };
        let got = match select(&hosts(spec), &demand, Ratios::default()) {
            Ok(h) => h.name.0.clone(),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expected, "{spec}");
    }

    #[test]
    fn spreads_by_free_ram() {
        check("a:1000/500:4/0 b:1000/100:4/0 c:1000/300:4/0", 100, 1, &[], "b");
        check("a:1000/0:4/0 b:1000/0:4/0", 100, 1, &[], "a");
    }

    #[test]
    fn ram_counts_with_its_allocation_ratio() {
        // 1000 MB at ratio 1.5 allows 1500 MB.
        check("a:1000/1000:4/0", 500, 1, &[], "a");
        check("a:1000/1001:4/0", 500, 1, &[], "No valid host was found. Rejected 1 host(s): not enough RAM.");
    }

    #[test]
    fn vcpus_count_with_their_ratio() {
        check("a:9000/0:1/16", 10, 1, &[], "No valid host was found. Rejected 1 host(s): not enough vCPUs.");
        check("a:9000/0:1/15 b:9000/0:1/16", 10, 1, &[], "a");
    }

    #[test]
    fn down_disabled_and_tried_hosts_are_skipped() {
        check("a:1000/0:4/0:down b:1000/900:4/0", 10, 1, &[], "b");
        check("a:1000/0:4/0:off b:1000/900:4/0", 10, 1, &[], "b");
        check("a:1000/0:4/0 b:1000/900:4/0", 10, 1, &["a"], "b");
        check(
            "a:1000/0:4/0 b:1000/0:4/0:down c:1000/0:4/0:off",
            10,
            1,
            &["a"],
            "No valid host was found. Rejected 1 host(s): service disabled; 1 host(s): service down; 1 host(s): already tried.",
        );
        check("", 10, 1, &[], "No valid host was found. There are no compute hosts.");
    }
}
