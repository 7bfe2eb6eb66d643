//! The chaos suite: a seeded workload (boots, deletes, floating-IP operations across the three network modes)
//! while random actors are killed at random moments — gateway, scheduler, network manager, compute agents,
//! the projects supervisor, conductors and VLAN supervisors. Afterwards: every accepted request reached a
//! terminal state, the dataplane equals what the store implies, no address is allocated twice or leaked,
//! quota usage equals the recomputed usage, and every killed actor came back.
//!
//! CI runs a fixed set of seeds for a few seconds each. `NIMBUS_CHAOS_SEED=N` replays one seed (the same
//! operations and kills; thread timing still varies), `NIMBUS_CHAOS_SECS=S` makes it a soak of S seconds.
//! Run with `-- --nocapture` to see the report.

use std::time::{Duration, Instant};

use nimbus_tests::TestCloud;
use nimbus_tests::workload::{self, Op, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Default, Debug)]
struct Report {
    seed: u64,
    kills: Vec<(String, Duration)>,
    /// The slowest operation and what it was.
    slowest: (Duration, String),
    accepted: usize,
    refused: usize,
    unreachable: usize,
    failed: Vec<String>,
    not_back: Vec<String>,
    violations: Vec<String>,
}

impl Report {
    fn print(&self) {
        let mut back: Vec<Duration> = self.kills.iter().map(|(_, d)| *d).collect();
        back.sort();
        let pct = |p: f64| back.get(((back.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or_default();
        eprintln!("chaos seed {}:", self.seed);
        eprintln!(
            "  kills {} (restart p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms)",
            self.kills.len(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            back.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        eprintln!(
            "  operations: {} accepted, {} refused (4xx), {} unanswered (gateway down), {} failed (5xx)",
            self.accepted,
            self.refused,
            self.unreachable,
            self.failed.len()
        );
        let ok = |v: bool| if v { "ok" } else { "VIOLATED" };
        eprintln!("  slowest operation: {:.0} ms ({})", self.slowest.0.as_secs_f64() * 1e3, self.slowest.1);
        eprintln!("  no 5xx: {}", ok(self.failed.is_empty()));
        eprintln!("  every killed actor came back: {} {:?}", ok(self.not_back.is_empty()), self.not_back);
        let slow: Vec<_> = self.kills.iter().filter(|(_, d)| *d > Duration::from_millis(100)).collect();
        if !slow.is_empty() {
            eprintln!("  restarts slower than 100 ms: {slow:?}");
        }
        eprintln!("  terminal states, addresses, quotas, dataplane, firewalls: {}", ok(self.violations.is_empty()));
    }
}

/// The actors the killer picks from, by their cloud-local names.
fn victims(t: &TestCloud, projects: &[String]) -> Vec<String> {
    let mut names: Vec<String> =
        ["gateway", "scheduler", "firewall", "network", "projects", "compute"].iter().map(|s| s.to_string()).collect();
    names.extend(t.cloud.hypervisors.keys().map(|h| format!("compute/{h}")));
    for p in projects {
        names.push(format!("conductor/{p}"));
        names.push(format!("vlan/{p}"));
    }
    names
}

async fn chaos(seed: u64, duration: Duration) -> Report {
    // Filtering hosts: the check after the run compares each host's firewall with what the store implies.
    let mut options = nimbus_tests::Options::default();
    options.drivers.fake_filtering = true;
    let t = TestCloud::start_with(options).await;
    let clients = workload::clients(&workload::projects(&t.admin).await, t.url()).await;
    // A server per project first, so every project has its conductor and VLAN supervisor to kill.
    let mut projects = Vec::new();
    for c in &clients {
        let id = nimbus_tests::create_server(c, "seed").await;
        let s = nimbus_tests::wait_for_status(c, &id, "ACTIVE").await;
        projects.push(s["tenant_id"].as_str().unwrap().to_string());
    }
    let names = victims(&t, &projects);
    let mut report = Report { seed, ..Report::default() };
    let deadline = Instant::now() + duration;

    let workload = {
        let clients = clients.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut outcomes = Vec::new();
            while Instant::now() < deadline {
                let batch: Vec<Op> = (0..rng.random_range(1..5))
                    .map(|_| {
                        Op::from_numbers(
                            rng.random(),
                            rng.random_range(0..3),
                            rng.random_range(0..8),
                            rng.random_range(0..8),
                        )
                    })
                    .collect();
                let mut set = tokio::task::JoinSet::new();
                for op in batch {
                    let clients = clients.clone();
                    set.spawn(async move {
                        let started = Instant::now();
                        let outcome = workload::run(&op, &clients).await;
                        (outcome, started.elapsed(), op)
                    });
                }
                while let Some(outcome) = set.join_next().await {
                    outcomes.push(outcome.unwrap());
                }
            }
            outcomes
        })
    };

    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut killed = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(30..250))).await;
        let name = names[rng.random_range(0..names.len())].clone();
        let Some(old) = t.running_id(&name) else { continue };
        let cell = ractor::registry::where_is(t.cloud.app.ns().actor_name(&name)).expect("it was just running");
        let killed_at = Instant::now();
        cell.kill();
        // Measure how long until a new incarnation runs.
        loop {
            if t.running_id(&name).is_some_and(|id| id != old) || killed_at.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        report.kills.push((name.clone(), killed_at.elapsed()));
        killed.push(name);
    }

    for (outcome, took, op) in workload.await.unwrap() {
        if took > report.slowest.0 {
            report.slowest = (took, format!("{op:?} → {outcome:?}"));
        }
        match outcome {
            Outcome::Accepted => report.accepted += 1,
            Outcome::Refused => report.refused += 1,
            Outcome::Unreachable => report.unreachable += 1,
            Outcome::Failed(why) => report.failed.push(why),
        }
    }
    report.violations = workload::settle_and_check(&t).await;
    killed.sort();
    killed.dedup();
    // Conductors run on demand: one killed, whose supervisor was killed after it, comes back only for a
    // project with logged operations (or at the project's next request).
    let with_operations = nimbus_actors::app::projects::with_operations(&t.cloud.app).expect("reading the store");
    let last_kill = |name: &str| report.kills.iter().rposition(|(n, _)| n == name);
    let needed = |name: &str| match name.strip_prefix("conductor/") {
        Some(project) if last_kill("projects") > last_kill(name) => {
            with_operations.iter().any(|p| p.to_string() == project)
        }
        _ => true,
    };
    report.not_back = killed.into_iter().filter(|n| needed(n) && t.running_id(n).is_none()).collect();
    t.shutdown().await;
    report
}

fn check(report: &Report) {
    report.print();
    assert!(report.failed.is_empty(), "seed {}: 5xx answers: {:#?}", report.seed, report.failed);
    assert!(report.not_back.is_empty(), "seed {}: not restarted: {:?}", report.seed, report.not_back);
    assert!(report.violations.is_empty(), "seed {}: {:#?}", report.seed, report.violations);
    assert!(!report.kills.is_empty() && report.accepted > 0, "seed {}: the run did nothing: {report:?}", report.seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_random_actors_under_load_loses_nothing() {
    let secs = std::env::var("NIMBUS_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let seeds: Vec<u64> = match std::env::var("NIMBUS_CHAOS_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => vec![11, 22, 33],
    };
    for seed in seeds {
        check(&chaos(seed, Duration::from_secs(secs)).await);
    }
}

/// The process-level variant: the whole node is SIGKILLed several times in the middle of the workload and
/// started again; afterwards every operation has finished or was rolled back, and the data file is consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_whole_node_mid_workload_loses_nothing() {
    const PASSWORD: &str = "chaos-secret";
    let seed = std::env::var("NIMBUS_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7u64);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = nimbus_tests::process::NimbusProcess::start(&data, PASSWORD);
    let admin = nimbus::client::Client::login(&node.url, "admin", PASSWORD, "admin").await.unwrap();
    let logins = workload::projects(&admin).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut accepted, mut kills) = (0, 0);
    for _round in 0..3 {
        let clients = workload::clients(&logins, &node.url).await;
        let until = Instant::now() + Duration::from_millis(rng.random_range(300..900));
        let mut set = tokio::task::JoinSet::new();
        // Keep a few operations in flight at every moment, then kill the node under them.
        while Instant::now() < until {
            while set.len() < 4 {
                let op = Op::from_numbers(
                    rng.random(),
                    rng.random_range(0..3),
                    rng.random_range(0..8),
                    rng.random_range(0..8),
                );
                let clients = clients.clone();
                set.spawn(async move { workload::run(&op, &clients).await });
            }
            if let Some(outcome) = set.join_next().await {
                let outcome = outcome.unwrap();
                assert!(!matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
                accepted += usize::from(outcome == Outcome::Accepted);
            }
        }
        node.kill();
        kills += 1;
        while let Some(outcome) = set.join_next().await {
            accepted += usize::from(outcome.unwrap() == Outcome::Accepted);
        }
        node = nimbus_tests::process::NimbusProcess::start(&data, PASSWORD);
    }
    let admin = nimbus::client::Client::login(&node.url, "admin", PASSWORD, "admin").await.unwrap();
    workload::settle(&admin).await;
    let servers = admin.get("/compute/v2.1/servers/detail?all_tenants=1").await.unwrap();
    let stuck: Vec<_> = servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["OS-EXT-STS:task_state"].is_null() || s["status"] == "BUILD")
        .collect();
    assert!(stuck.is_empty(), "{stuck:#?}");
    assert!(node.terminate().success());
    let store = nimbus_storage::Store::open(data.join("nimbus.redb")).unwrap();
    let violations = nimbus_tests::store_violations(&store);
    eprintln!(
        "process chaos seed {seed}: {kills} SIGKILLs, {accepted} operations accepted, {} violations",
        violations.len()
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(accepted > 0, "seed {seed}: the workload did nothing");
}
