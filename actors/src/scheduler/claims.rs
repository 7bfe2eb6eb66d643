//! Claims: the placements the scheduler made that the store may not show yet. Each placement is claimed at
//! once, so a burst of requests spreads over the hosts instead of piling onto the one that looked emptiest
//! when the view was read; a claim is dropped once a view shows its instance counted. Pure code, driven by
//! tests.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nimbus_protocol::ids::{HostId, InstanceId};
use nimbus_protocol::scheduler::Demand;

use super::placement::HostState;

/// How long a claim counts while the store does not show its instance on a host yet.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Claim {
    pub host: HostId,
    pub demand: Demand,
    pub at: Instant,
}

/// Whether a claim still counts, given where a view read at `read_at` shows its instance (`None`: the view
/// does not have it; `Some(None)`: not on a host).
pub fn still_counts(claim: &Claim, shown: Option<&Option<HostId>>, read_at: Instant, now: Instant) -> bool {
    match shown {
        // The store counts it now: on its host, or (a view newer than the claim) wherever it went since. A
        // view older than the claim may still show the host of an earlier attempt; the claim stays.
        Some(Some(host)) if *host == claim.host || read_at > claim.at => false,
        // Gone from a view read after the claim: deleted meanwhile; its resources are free again.
        None if read_at > claim.at => false,
        _ => now.duration_since(claim.at) < CLAIM_TTL,
    }
}

#[derive(Debug, Default)]
pub struct Claims {
    claims: HashMap<InstanceId, Claim>,
    by_host: HashMap<HostId, HashSet<InstanceId>>,
}

impl Claims {
    /// Claims `claim.host` for `instance`; returns the claim this one replaces (an earlier attempt's).
    pub fn claim(&mut self, instance: InstanceId, claim: Claim) -> Option<Claim> {
        self.by_host.entry(claim.host.clone()).or_default().insert(instance);
        let old = self.claims.insert(instance, claim)?;
        self.unindex(&old.host, instance);
        Some(old)
    }

    fn unindex(&mut self, host: &HostId, instance: InstanceId) {
        // A claim replaced by one on the same host keeps its index entry.
        if self.claims.get(&instance).is_some_and(|c| c.host == *host) {
            return;
        }
        if let Some(on_host) = self.by_host.get_mut(host) {
            on_host.remove(&instance);
            if on_host.is_empty() {
                self.by_host.remove(host);
            }
        }
    }

    /// The instances claimed for.
    pub fn instances(&self) -> Vec<InstanceId> {
        self.claims.keys().copied().collect()
    }

    /// The instances claimed for on `host`.
    pub fn on_host(&self, host: &HostId) -> Vec<InstanceId> {
        self.by_host.get(host).map(|on| on.iter().copied().collect()).unwrap_or_default()
    }

    /// The hosts holding a claim older than [`CLAIM_TTL`].
    pub fn hosts_with_expired(&self, now: Instant) -> Vec<HostId> {
        let expired = self.claims.values().filter(|c| now.duration_since(c.at) >= CLAIM_TTL);
        expired.map(|c| c.host.clone()).collect()
    }

    /// Drops the claims a view read at `read_at` counts already (see [`still_counts`]).
    pub fn settle(&mut self, shown: &HashMap<InstanceId, Option<HostId>>, read_at: Instant, now: Instant) {
        let instances = self.instances();
        self.settle_only(&instances, shown, read_at, now);
    }

    /// As [`Claims::settle`], for the claims of `instances` only (those of the hosts a view re-read).
    pub fn settle_only(
        &mut self,
        instances: &[InstanceId],
        shown: &HashMap<InstanceId, Option<HostId>>,
        read_at: Instant,
        now: Instant,
    ) {
        for &id in instances {
            let Some(claim) = self.claims.get(&id) else { continue };
            if !still_counts(claim, shown.get(&id), read_at, now) {
                let host = claim.host.clone();
                self.claims.remove(&id);
                self.unindex(&host, id);
            }
        }
    }

    /// Adds what the claims on `host` use to `state`, the host as the store shows it.
    pub fn add_to_host(&self, state: &mut HostState) {
        for id in self.by_host.get(&state.name).into_iter().flatten() {
            let demand = &self.claims[id].demand;
            state.used_vcpus += demand.vcpus;
            state.used_ram_mb += demand.ram_mb;
            state.used_disk_gb += demand.disk_gb;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check(claimed on, claimed at, view shows, view read at, now, expected)`; times in seconds after a base
    /// instant; "shows" is `-` (not in the view), `none` (not on a host) or a host name.
    fn check(host: &str, at: u64, shows: &str, read_at: u64, now: u64, expected: bool) {
        let base = Instant::now();
        let t = |s: u64| base + Duration::from_secs(s);
        let claim = Claim {
            host: HostId(host.into()),
            demand: Demand { vcpus: 1, ram_mb: 512, disk_gb: 1, tried: Vec::new() },
            at: t(at),
        };
        let shown = match shows {
            "-" => None,
            "none" => Some(None),
            h => Some(Some(HostId(h.into()))),
        };
        let got = still_counts(&claim, shown.as_ref(), t(read_at), t(now));
        assert_eq!(got, expected, "claim on {host} at {at}, view shows {shows} at {read_at}, now {now}");
    }

    #[test]
    fn a_claim_goes_once_a_view_counts_its_instance() {
        check("a", 10, "a", 5, 11, false);
        check("a", 10, "a", 15, 16, false);
        check("a", 10, "b", 15, 16, false);
    }

    #[test]
    fn an_older_view_showing_an_earlier_attempt_keeps_the_claim() {
        check("a", 10, "b", 5, 11, true);
        check("a", 10, "none", 5, 11, true);
        check("a", 10, "-", 5, 11, true);
    }

    #[test]
    fn an_instance_gone_from_a_newer_view_was_deleted() {
        check("a", 10, "-", 15, 16, false);
        check("a", 10, "none", 15, 16, true);
    }

    #[test]
    fn a_claim_the_store_never_shows_expires() {
        check("a", 10, "none", 15, 10 + CLAIM_TTL.as_secs() - 1, true);
        check("a", 10, "none", 15, 10 + CLAIM_TTL.as_secs(), false);
    }

    #[test]
    fn a_claim_for_another_attempt_moves_the_instance_to_its_new_host() {
        let mut claims = Claims::default();
        let demand = Demand { vcpus: 1, ram_mb: 512, disk_gb: 1, tried: Vec::new() };
        let (id, now) = (InstanceId::generate(), Instant::now());
        let on = |host: &str| Claim { host: HostId(host.into()), demand: demand.clone(), at: now };
        assert!(claims.claim(id, on("a")).is_none());
        assert_eq!(claims.claim(id, on("a")).map(|c| c.host), Some(HostId("a".into())), "the same host again");
        assert_eq!(claims.on_host(&HostId("a".into())), vec![id]);
        assert_eq!(claims.claim(id, on("b")).map(|c| c.host), Some(HostId("a".into())));
        assert!(claims.on_host(&HostId("a".into())).is_empty());
        assert_eq!(claims.on_host(&HostId("b".into())), vec![id]);
        // Counted by a view read after the claim: gone, from its host too.
        let shown = HashMap::from([(id, Some(HostId("b".into())))]);
        claims.settle_only(&[id], &shown, now + Duration::from_secs(1), now + Duration::from_secs(1));
        assert!(claims.on_host(&HostId("b".into())).is_empty() && claims.instances().is_empty());
        assert!(claims.hosts_with_expired(now + CLAIM_TTL).is_empty());
    }

    #[test]
    fn claims_add_their_demand_to_their_host() {
        let mut claims = Claims::default();
        let demand = Demand { vcpus: 2, ram_mb: 1024, disk_gb: 10, tried: Vec::new() };
        claims.claim(InstanceId::generate(), Claim { host: HostId("a".into()), demand, at: Instant::now() });
        let host = |name: &str| HostState {
            name: HostId(name.into()),
            vcpus: 8,
            ram_mb: 8192,
            disk_gb: 100,
            used_vcpus: 0,
            used_ram_mb: 0,
            used_disk_gb: 0,
            enabled: true,
            up: true,
        };
        let (mut a, mut b) = (host("a"), host("b"));
        claims.add_to_host(&mut a);
        claims.add_to_host(&mut b);
        assert_eq!((a.used_vcpus, a.used_ram_mb, a.used_disk_gb), (2, 1024, 10));
        assert_eq!(b, host("b"));
    }
}
