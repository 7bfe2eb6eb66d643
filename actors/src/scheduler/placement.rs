//! Placement: filters that rule hosts out, a weigher that ranks the rest. Pure code, driven by tests.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

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
pub fn select<'h>(
    hosts: impl IntoIterator<Item = &'h HostState>,
    demand: &Demand,
    ratios: Ratios,
) -> Result<&'h HostState, NoValidHost> {
    let mut rejected: BTreeMap<Rejection, usize> = BTreeMap::new();
    let mut best: Option<(&HostState, f64)> = None;
    let mut seen = 0;
    for host in hosts {
        seen += 1;
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
        let detail = if seen == 0 {
            "There are no compute hosts.".to_string()
        } else {
            let reasons: Vec<String> =
                rejected.iter().map(|(why, n)| format!("{n} host(s): {}", why.describe())).collect();
            format!("Rejected {}.", reasons.join("; "))
        };
        NoValidHost { detail }
    })
}

/// The hosts a scheduler places on, kept ranked by weight as their usage changes, so that a placement
/// visits the best hosts only instead of every host. It chooses exactly as [`select`] over
/// [`HostView::hosts`]. Every change ([`HostView::add_usage`], [`HostView::put`], [`HostView::remove`])
/// costs O(log n).
#[derive(Debug)]
pub struct HostView {
    /// By name, the order [`select`] breaks ties in.
    hosts: BTreeMap<HostId, HostState>,
    /// The enabled, up hosts, best first; the others can never be chosen until they are put back up.
    ranked: BTreeSet<Ranked>,
    ratios: Ratios,
}

/// A host's place in the ranking: the higher weight first, then the lower name.
#[derive(Clone, Debug)]
struct Ranked {
    weight: f64,
    name: HostId,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        other.weight.total_cmp(&self.weight).then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl HostView {
    pub fn new(hosts: Vec<HostState>, ratios: Ratios) -> HostView {
        let mut view = HostView { hosts: BTreeMap::new(), ranked: BTreeSet::new(), ratios };
        for host in hosts {
            view.put(host);
        }
        view
    }

    /// Every host, by name.
    pub fn hosts(&self) -> impl Iterator<Item = &HostState> {
        self.hosts.values()
    }

    #[cfg(test)]
    fn get(&self, host: &HostId) -> Option<&HostState> {
        self.hosts.get(host)
    }

    fn ranked(host: &HostState, ratios: Ratios) -> Option<Ranked> {
        (host.enabled && host.up).then(|| Ranked { weight: weigh(host, ratios), name: host.name.clone() })
    }

    /// Adds or replaces a host.
    pub fn put(&mut self, host: HostState) {
        self.remove(&host.name);
        if let Some(r) = Self::ranked(&host, self.ratios) {
            self.ranked.insert(r);
        }
        self.hosts.insert(host.name.clone(), host);
    }

    pub fn remove(&mut self, host: &HostId) -> Option<HostState> {
        let old = self.hosts.remove(host)?;
        if let Some(r) = Self::ranked(&old, self.ratios) {
            self.ranked.remove(&r);
        }
        Some(old)
    }

    /// Adds `demand` to what `host` uses (nothing if the view does not have the host).
    pub fn add_usage(&mut self, host: &HostId, demand: &Demand) {
        self.change_usage(host, |h| {
            h.used_vcpus += demand.vcpus;
            h.used_ram_mb += demand.ram_mb;
            h.used_disk_gb += demand.disk_gb;
        });
    }

    /// Takes `demand` back from what `host` uses.
    pub fn remove_usage(&mut self, host: &HostId, demand: &Demand) {
        self.change_usage(host, |h| {
            h.used_vcpus = h.used_vcpus.saturating_sub(demand.vcpus);
            h.used_ram_mb = h.used_ram_mb.saturating_sub(demand.ram_mb);
            h.used_disk_gb = h.used_disk_gb.saturating_sub(demand.disk_gb);
        });
    }

    fn change_usage(&mut self, host: &HostId, change: impl FnOnce(&mut HostState)) {
        if let Some(mut state) = self.remove(host) {
            change(&mut state);
            self.put(state);
        }
    }

    /// The best host for `demand`, as [`select`] chooses: the first ranked host the filters let through. Once
    /// a host lacks RAM so do all after it (the weight is the free RAM), and only a full pass, which also
    /// names every reason for a "no", decides.
    pub fn select(&self, demand: &Demand) -> Result<&HostState, NoValidHost> {
        for r in &self.ranked {
            let host = &self.hosts[&r.name];
            match filter(host, demand, self.ratios) {
                Ok(()) => return Ok(host),
                Err(Rejection::Ram) => break,
                Err(_) => {}
            }
        }
        select(self.hosts.values(), demand, self.ratios)
    }
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
    /// A ranked view chooses as `select` does, placement after placement, over random clouds: hosts of
    /// mixed sizes, some down or disabled, demands some of which fit nowhere, hosts already tried.
    #[test]
    fn a_ranked_view_chooses_as_select_does() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(11);
        let ratios = Ratios::default();
        for _ in 0..200 {
            let hosts: Vec<HostState> = (0..rng.random_range(0..40))
                .map(|i| HostState {
                    name: HostId(format!("h{:02}", rng.random_range(0..60) * 100 + i)),
                    vcpus: rng.random_range(1..=8),
                    ram_mb: [1024, 2048, 4096][rng.random_range(0..3)],
                    disk_gb: rng.random_range(10..=40),
                    used_vcpus: rng.random_range(0..4),
                    used_ram_mb: rng.random_range(0..3) * 512,
                    used_disk_gb: 0,
                    enabled: rng.random_ratio(9, 10),
                    up: rng.random_ratio(9, 10),
                })
                .collect();
            let mut view = HostView::new(hosts, ratios);
            for _ in 0..60 {
                let tried = view.hosts().filter(|_| rng.random_ratio(1, 20)).map(|h| h.name.clone()).collect();
                let demand = Demand {
                    vcpus: rng.random_range(1..=4),
                    ram_mb: [256, 512, 1024, 4096][rng.random_range(0..4)],
                    disk_gb: rng.random_range(1..=10),
                    tried,
                };
                let expected = select(view.hosts(), &demand, ratios).map(|h| h.name.clone());
                let got = view.select(&demand).map(|h| h.name.clone());
                assert_eq!(got, expected, "{demand:?} over {:?}", view.hosts().collect::<Vec<_>>());
                if let Ok(host) = got {
                    view.add_usage(&host, &demand);
                }
                // The view kept in step: a host changed, gone, back or new, usage given back.
                let names: Vec<HostId> = view.hosts().map(|h| h.name.clone()).collect();
                if let Some(name) = names.get(rng.random_range(0..names.len().max(1))) {
                    match rng.random_range(0..4) {
                        0 => {
                            let mut changed = view.get(name).expect("listed").clone();
                            changed.up = rng.random_ratio(4, 5);
                            changed.enabled = rng.random_ratio(9, 10);
                            changed.used_ram_mb = rng.random_range(0..3) * 512;
                            view.put(changed);
                        }
                        1 => drop(view.remove(name)),
                        2 => view.remove_usage(name, &demand),
                        _ => {}
                    }
                }
            }
        }
    }
}
