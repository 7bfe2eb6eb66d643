//! A property test: random interleavings of boots, deletes and floating-IP operations across projects of all
//! three modes never hand an address out twice, never leak one, keep quota usage equal to the usage
//! recomputed from the resources, and leave the dataplane equal to what the store implies.
//!
//! `PROPTEST_CASES` sets how many random workloads run (default 6); a failure prints the workload, and
//! proptest keeps its seed in `tests/proptest-regressions/properties.txt` so every later run replays it first.

use std::collections::BTreeSet;
use std::time::Duration;

use nimbus::client::Client;
use nimbus_storage::Reads;
use nimbus_storage::schema::{FIXED_IPS, FLOATING_IPS};
use nimbus_tests::*;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
enum Op {
    Boot(usize),
    Delete(usize, usize),
    Allocate(usize),
    Associate(usize, usize, usize),
    Disassociate(usize, usize),
    Release(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..3usize;
    prop_oneof![
        3 => p.clone().prop_map(Op::Boot),
        2 => (p.clone(), 0..8usize).prop_map(|(p, i)| Op::Delete(p, i)),
        2 => p.clone().prop_map(Op::Allocate),
        2 => (p.clone(), 0..4usize, 0..8usize).prop_map(|(p, f, s)| Op::Associate(p, f, s)),
        1 => (p.clone(), 0..4usize).prop_map(|(p, f)| Op::Disassociate(p, f)),
        1 => (p, 0..4usize).prop_map(|(p, f)| Op::Release(p, f)),
    ]
}

/// The `n`-th (wrapping) element of what `path` lists under `key`, if any.
async fn nth(client: &Client, path: &str, key: &str, n: usize) -> Option<Value> {
    let listed = client.get(path).await.ok()?;
    let items = listed[key].as_array()?.clone();
    (!items.is_empty()).then(|| items[n % items.len()].clone())
}

/// Runs one operation; any 4xx is a legitimate answer (quota, exhaustion, a server deleted meanwhile), a 5xx
/// is a failure.
async fn run(op: Op, clients: &[Client]) -> Result<(), String> {
    let check = |(status, body): (reqwest::StatusCode, Value), what: String| {
        if status.is_server_error() { Err(format!("{what} answered {status}: {body}")) } else { Ok(()) }
    };
    match op {
        Op::Boot(p) => {
            let image = default_image(&clients[p]).await;
            let body = json!({"server": {"name": format!("prop-{p}"), "imageRef": image, "flavorRef": "1"}});
            check(clients[p].raw(Method::POST, "/compute/v2.1/servers", Some(&body)).await.unwrap(), "boot".into())
        }
        Op::Delete(p, i) => match nth(&clients[p], "/compute/v2.1/servers", "servers", i).await {
            Some(s) => {
                let path = format!("/compute/v2.1/servers/{}", s["id"].as_str().unwrap());
                check(clients[p].raw(Method::DELETE, &path, None).await.unwrap(), "delete".into())
            }
            None => Ok(()),
        },
        Op::Allocate(p) => check(
            clients[p].raw(Method::POST, "/compute/v2.1/os-floating-ips", Some(&json!({}))).await.unwrap(),
            "allocate".into(),
        ),
        Op::Associate(p, f, s) => {
            let (Some(fip), Some(server)) = (
                nth(&clients[p], "/compute/v2.1/os-floating-ips", "floating_ips", f).await,
                nth(&clients[p], "/compute/v2.1/servers", "servers", s).await,
            ) else {
                return Ok(());
            };
            let path = format!("/compute/v2.1/servers/{}/action", server["id"].as_str().unwrap());
            let body = json!({"addFloatingIp": {"address": fip["ip"]}});
            check(clients[p].raw(Method::POST, &path, Some(&body)).await.unwrap(), "associate".into())
        }
        Op::Disassociate(p, f) => {
            let Some(fip) = nth(&clients[p], "/compute/v2.1/os-floating-ips", "floating_ips", f).await else {
                return Ok(());
            };
            let Some(server) = fip["instance_id"].as_str() else { return Ok(()) };
            let path = format!("/compute/v2.1/servers/{server}/action");
            let body = json!({"removeFloatingIp": {"address": fip["ip"]}});
            check(clients[p].raw(Method::POST, &path, Some(&body)).await.unwrap(), "disassociate".into())
        }
        Op::Release(p, f) => {
            let Some(fip) = nth(&clients[p], "/compute/v2.1/os-floating-ips", "floating_ips", f).await else {
                return Ok(());
            };
            let path = format!("/compute/v2.1/os-floating-ips/{}", fip["id"].as_str().unwrap());
            check(clients[p].raw(Method::DELETE, &path, None).await.unwrap(), "release".into())
        }
    }
}

async fn workload(batches: Vec<Vec<Op>>) -> Result<(), String> {
    let t = TestCloud::start().await;
    // Small networks, so exhaustion happens too.
    for network in [
        json!({"label": "dhcp", "cidr": "10.1.0.0/28", "mode": "flat_dhcp", "bridge": "br101"}),
        json!({"label": "vlan", "cidr": "10.2.0.0/26", "mode": "vlan", "num_networks": 4, "network_size": 16, "vlan_start": 200}),
    ] {
        t.admin.post("/compute/v2.1/os-networks", &json!({"network": network})).await.unwrap();
    }
    let clients = vec![
        t.user_in_mode("flat", "member").await,
        t.user_in_mode("flat_dhcp", "member").await,
        t.user_in_mode("vlan", "member").await,
    ];
    for batch in batches {
        // The operations of a batch run concurrently: their steps interleave.
        let mut set = tokio::task::JoinSet::new();
        for op in batch {
            let clients = clients.clone();
            set.spawn(async move { run(op, &clients).await });
        }
        while let Some(outcome) = set.join_next().await {
            outcome.unwrap()?;
        }
    }
    wait_until("every operation to finish", Duration::from_secs(60), || async {
        let all = t.admin.get("/compute/v2.1/servers/detail?all_tenants=1").await.unwrap();
        all["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["OS-EXT-STS:task_state"].is_null() && s["status"] != "BUILD")
    })
    .await;
    // DHCP releases arrive as events; give them a moment to be recorded.
    let mut violations = Vec::new();
    for _ in 0..50 {
        violations = store_violations(&t.cloud.ctx.store);
        violations.extend(dataplane_mismatches(&t));
        if violations.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.shutdown().await;
    if violations.is_empty() { Ok(()) } else { Err(format!("{violations:#?}")) }
}

/// Where the sim dataplane differs from what the store implies: DHCP host entries and floating NAT rules.
fn dataplane_mismatches(t: &TestCloud) -> Vec<String> {
    let state = t.cloud.sim.state();
    let (fixed, floating) = t
        .cloud
        .ctx
        .store
        .read(|r| Ok::<_, nimbus_storage::StoreError>((r.scan(&FIXED_IPS)?, r.scan(&FLOATING_IPS)?)))
        .unwrap();
    let mut bad = Vec::new();
    let recorded: BTreeSet<(String, String)> = state
        .segments
        .values()
        .filter_map(|s| s.dhcp.as_ref())
        .flat_map(|(_, hosts)| hosts.iter().map(|h| (h.mac.clone(), h.address.to_string())))
        .collect();
    let dhcp_networks: BTreeSet<_> = state.segments.values().filter(|s| s.dhcp.is_some()).map(|s| s.network).collect();
    let expected: BTreeSet<(String, String)> = fixed
        .iter()
        .filter(|(k, row)| row.allocated && dhcp_networks.contains(&k.0))
        .map(|(_, row)| (row.mac.clone().unwrap_or_default(), row.address.to_string()))
        .collect();
    if recorded != expected {
        bad.push(format!("DHCP hosts: recorded {recorded:?}, store implies {expected:?}"));
    }
    let nat: BTreeSet<(String, String)> =
        state.nat.floating.iter().map(|r| (r.floating.to_string(), r.fixed.to_string())).collect();
    let associated: BTreeSet<(String, String)> = floating
        .iter()
        .filter_map(|(_, ip)| ip.instance.and(ip.fixed_address).map(|f| (ip.address.to_string(), f.to_string())))
        .collect();
    if nat != associated {
        bad.push(format!("NAT: recorded {nat:?}, store implies {associated:?}"));
    }
    bad
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(6),
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_workloads_keep_every_address_and_quota_invariant(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..5), 4..14)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let outcome = runtime.block_on(workload(batches));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
