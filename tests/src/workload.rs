//! A cloud workload for the property and chaos tests: networks of all three modes, one project per mode,
//! and operations (boots, deletes, floating-IP allocate / associate / disassociate / release, moving a
//! server into or out of its project's default security group) that pick their targets from what exists
//! when they run. Plus the check that the dataplane equals what the store
//! implies.

use std::collections::BTreeSet;

use nimbus::client::Client;
use nimbus_actors::compute::virt::{GuestPower, VirtDriver};
use nimbus_protocol::ids::HostId;
use nimbus_storage::Reads;
use nimbus_storage::records::{Instance, VmState};
use nimbus_storage::schema::{FIXED_IPS, FLOATING_IPS, INSTANCES};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{Login, TestCloud, new_project, new_user_on};

#[derive(Clone, Debug)]
pub enum Op {
    Boot(usize),
    Delete(usize, usize),
    Allocate(usize),
    Associate(usize, usize, usize),
    Disassociate(usize, usize),
    Release(usize, usize),
    /// Takes the server out of the default group if it is in it, else puts it in.
    Regroup(usize, usize),
    /// A power action the server's status allows (for an ACTIVE one, the `a`-th of stop, reboot, pause
    /// and suspend); for a server in another state, a stop, which it refuses.
    Power(usize, usize, usize),
}

impl Op {
    /// The numbers [`Op::from_numbers`] reads as kinds: 0 up to this.
    pub const KINDS: u32 = 13;

    /// An operation from a number below [`Op::KINDS`] and three more for its targets, weighted as a user
    /// would act.
    pub fn from_numbers(kind: u32, project: usize, a: usize, b: usize) -> Op {
        match kind % Op::KINDS {
            0..=2 => Op::Boot(project),
            3 | 4 => Op::Delete(project, a),
            5 | 6 => Op::Allocate(project),
            7 | 8 => Op::Associate(project, a, b),
            9 => Op::Disassociate(project, a),
            10 => Op::Release(project, a),
            11 => Op::Regroup(project, a),
            _ => Op::Power(project, a, b),
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: accepted.
    Accepted,
    /// 4xx, or nothing to act on: a legitimate refusal (quota, exhaustion, a target deleted meanwhile).
    Refused,
    /// No answer: the gateway was being restarted, or a worker was killed while it served the request (503);
    /// the request may or may not have taken effect, as with any lost connection.
    Unreachable,
    /// 5xx: a failure.
    Failed(String),
}

/// Sets up the networks and one member per mode (flat, flat_dhcp, vlan); small networks, so exhaustion
/// happens too. Returns the members' logins.
pub async fn projects(admin: &Client) -> Vec<Login> {
    for network in [
        json!({"label": "dhcp", "cidr": "10.1.0.0/28", "mode": "flat_dhcp", "bridge": "br101"}),
        json!({"label": "vlan", "cidr": "10.2.0.0/26", "mode": "vlan", "num_networks": 4, "network_size": 16, "vlan_start": 200}),
    ] {
        admin.post("/compute/v2.1/os-networks", &json!({"network": network})).await.unwrap();
    }
    let mut logins = Vec::new();
    for mode in ["flat", "flat_dhcp", "vlan"] {
        let project = new_project(admin, mode).await;
        logins.push(new_user_on(admin, &project, "member").await);
    }
    logins
}

/// Logs every user in at `url`.
pub async fn clients(logins: &[Login], url: &str) -> Vec<Client> {
    let mut out = Vec::new();
    for login in logins {
        out.push(login.client(url).await);
    }
    out
}

async fn send(client: &Client, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value), Outcome> {
    client.raw(method, path, body).await.map(|(s, v)| (s.as_u16(), v)).map_err(|_| Outcome::Unreachable)
}

/// The `n`-th (wrapping) element of what `path` lists under `key`.
async fn nth(client: &Client, path: &str, key: &str, n: usize) -> Result<Option<Value>, Outcome> {
    let (status, listed) = send(client, Method::GET, path, None).await?;
    if status != 200 {
        return Err(classify(status, &listed));
    }
    let items = listed[key].as_array().cloned().unwrap_or_default();
    Ok((!items.is_empty()).then(|| items[n % items.len()].clone()))
}

fn classify(status: u16, body: &Value) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted,
        400..=499 => Outcome::Refused,
        503 => Outcome::Unreachable,
        _ => Outcome::Failed(format!("{status}: {body}")),
    }
}

/// Runs one operation as project `clients[p]`.
pub async fn run(op: &Op, clients: &[Client]) -> Outcome {
    match run_inner(op, clients).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

async fn run_inner(op: &Op, clients: &[Client]) -> Result<Outcome, Outcome> {
    let refused = Ok(Outcome::Refused);
    let (status, body) = match *op {
        Op::Boot(p) => {
            let Some(image) = nth(&clients[p], "/image/v2/images", "images", 0).await? else { return refused };
            let image = image["id"].as_str().unwrap_or_default().to_string();
            let body = json!({"server": {"name": format!("w-{p}"), "imageRef": image, "flavorRef": "1"}});
            send(&clients[p], Method::POST, "/compute/v2.1/servers", Some(&body)).await?
        }
        Op::Delete(p, i) => {
            let Some(s) = nth(&clients[p], "/compute/v2.1/servers", "servers", i).await? else { return refused };
            send(
                &clients[p],
                Method::DELETE,
                &format!("/compute/v2.1/servers/{}", s["id"].as_str().unwrap_or_default()),
                None,
            )
            .await?
        }
        Op::Allocate(p) => send(&clients[p], Method::POST, "/compute/v2.1/os-floating-ips", Some(&json!({}))).await?,
        Op::Associate(p, f, s) => {
            let Some(fip) = nth(&clients[p], "/compute/v2.1/os-floating-ips", "floating_ips", f).await? else {
                return refused;
            };
            let Some(server) = nth(&clients[p], "/compute/v2.1/servers", "servers", s).await? else { return refused };
            let path = format!("/compute/v2.1/servers/{}/action", server["id"].as_str().unwrap_or_default());
            send(&clients[p], Method::POST, &path, Some(&json!({"addFloatingIp": {"address": fip["ip"]}}))).await?
        }
        Op::Disassociate(p, f) => {
            let Some(fip) = nth(&clients[p], "/compute/v2.1/os-floating-ips", "floating_ips", f).await? else {
                return refused;
            };
            let Some(server) = fip["instance_id"].as_str() else { return refused };
            let path = format!("/compute/v2.1/servers/{server}/action");
            send(&clients[p], Method::POST, &path, Some(&json!({"removeFloatingIp": {"address": fip["ip"]}}))).await?
        }
        Op::Release(p, f) => {
            let Some(fip) = nth(&clients[p], "/compute/v2.1/os-floating-ips", "floating_ips", f).await? else {
                return refused;
            };
            let path = format!("/compute/v2.1/os-floating-ips/{}", fip["id"].as_str().unwrap_or_default());
            send(&clients[p], Method::DELETE, &path, None).await?
        }
        Op::Regroup(p, s) => {
            let Some(server) = nth(&clients[p], "/compute/v2.1/servers/detail", "servers", s).await? else {
                return refused;
            };
            let in_default =
                server["security_groups"].as_array().is_some_and(|g| g.iter().any(|g| g["name"] == "default"));
            let action = if in_default { "removeSecurityGroup" } else { "addSecurityGroup" };
            let path = format!("/compute/v2.1/servers/{}/action", server["id"].as_str().unwrap_or_default());
            send(&clients[p], Method::POST, &path, Some(&json!({ action: {"name": "default"} }))).await?
        }
        Op::Power(p, s, a) => {
            let Some(server) = nth(&clients[p], "/compute/v2.1/servers/detail", "servers", s).await? else {
                return refused;
            };
            let action = match server["status"].as_str().unwrap_or_default() {
                "ACTIVE" => [
                    json!({"os-stop": null}),
                    json!({"reboot": {"type": "SOFT"}}),
                    json!({"pause": null}),
                    json!({"suspend": null}),
                ][a % 4]
                    .clone(),
                "SHUTOFF" => json!({"os-start": null}),
                "PAUSED" => json!({"unpause": null}),
                "SUSPENDED" => json!({"resume": null}),
                _ => json!({"os-stop": null}),
            };
            let path = format!("/compute/v2.1/servers/{}/action", server["id"].as_str().unwrap_or_default());
            send(&clients[p], Method::POST, &path, Some(&action)).await?
        }
    };
    Ok(classify(status, &body))
}

/// Where the fake hypervisors differ from the store: each must run exactly the ACTIVE instances placed on it.
pub fn hypervisor_mismatches(t: &TestCloud) -> Vec<String> {
    let instances = t.cloud.store.read(|r| r.scan(&INSTANCES)).expect("reading the store");
    let mut bad = Vec::new();
    for (host, hypervisor) in &t.cloud.hypervisors {
        let running: BTreeSet<String> = hypervisor.running().iter().map(|s| s.id.to_string()).collect();
        let settled = |i: &Instance| {
            matches!(i.vm_state, VmState::Active | VmState::Stopped | VmState::Paused | VmState::Suspended)
                && i.task_state.is_none()
        };
        let placed: BTreeSet<String> = instances
            .iter()
            .filter(|(_, i)| i.host.as_ref() == Some(host) && settled(i))
            .map(|(id, _)| id.to_string())
            .collect();
        if running != placed {
            bad.push(format!("{host} runs {running:?}, the store places {placed:?} there"));
        }
        for (id, instance) in instances.iter().filter(|(_, i)| i.host.as_ref() == Some(host) && settled(i)) {
            let expected = match instance.vm_state {
                VmState::Stopped => GuestPower::Off,
                VmState::Paused => GuestPower::Paused,
                VmState::Suspended => GuestPower::Suspended,
                _ => GuestPower::Running,
            };
            if let Some(power) = hypervisor.power_of(*id)
                && power != expected
            {
                bad.push(format!("{id} on {host} is {power:?}, the store says {:?}", instance.vm_state));
            }
        }
    }
    bad
}

/// Where a filtering fake host's recorded firewall differs from what the store implies for it.
pub fn firewall_mismatches(t: &TestCloud) -> Vec<String> {
    let filtering: Vec<HostId> =
        t.cloud.hypervisors.iter().filter(|(_, h)| h.filters_ports()).map(|(host, _)| host.clone()).collect();
    let implied =
        nimbus_actors::app::security_groups::host_firewalls(&t.cloud.app, &filtering).expect("reading the store");
    let mut bad = Vec::new();
    for host in &filtering {
        let installed = t.cloud.hypervisors[host].firewall();
        if installed.as_ref() != implied.get(host) {
            bad.push(format!("{host} enforces {installed:?}, the store implies {:?}", implied.get(host)));
        }
    }
    bad
}

/// Where the sim dataplane differs from what the store implies: DHCP host entries and floating NAT rules.
pub fn dataplane_mismatches(t: &TestCloud) -> Vec<String> {
    let state = t.cloud.sim().state();
    let (fixed, floating) = t
        .cloud
        .store
        .read(|r| Ok::<_, nimbus_storage::StoreError>((r.scan(&FIXED_IPS)?, r.scan(&FLOATING_IPS)?)))
        .expect("reading the store");
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

/// Waits (up to a minute) until no server is building or deleting.
pub async fn settle(admin: &Client) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !all_settled(admin).await && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether every server of every project, on every page of the list, is neither building nor deleting.
async fn all_settled(admin: &Client) -> bool {
    let mut path = Some("/compute/v2.1/servers/detail?all_tenants=1".to_string());
    while let Some(p) = path.take() {
        let Ok(page) = admin.get(&p).await else { return false };
        let servers = page["servers"].as_array().into_iter().flatten();
        if !servers.into_iter().all(|s| s["OS-EXT-STS:task_state"].is_null() && s["status"] != "BUILD") {
            return false;
        }
        let next = page["servers_links"].as_array().and_then(|l| l.iter().find(|l| l["rel"] == "next").cloned());
        if let Some(next) = next {
            // A next link elsewhere is never followed, so the list is not known to be settled.
            let Some(rest) = next["href"].as_str().and_then(|h| h.strip_prefix(admin.base())) else { return false };
            path = Some(rest.to_string());
        }
    }
    true
}

/// Settles, then waits until the store's invariants, the dataplane and the hypervisors agree (DHCP events
/// arrive asynchronously); returns what is still wrong after that.
pub async fn settle_and_check(t: &TestCloud) -> Vec<String> {
    settle(&t.admin).await;
    let mut violations = Vec::new();
    for _ in 0..100 {
        violations = crate::store_violations(&t.cloud.store);
        violations.extend(dataplane_mismatches(t));
        violations.extend(hypervisor_mismatches(t));
        violations.extend(firewall_mismatches(t));
        if violations.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    violations
}
