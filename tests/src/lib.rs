//! nimbus-tests: the harness the integration suite (`tests/it`) runs on.
//!
//! # Layout
//! - [`TestCloud`]: a whole cloud in the test process, with its own data directory, a port-0 listener, its own
//!   actor namespace (so tests run in parallel), short timers, and an admin client.
//! - [`process`]: the real `nimbus` binary as a child process (for SIGTERM / SIGKILL tests), killed on drop.
//! - [`openstack`]: the stock `openstack` CLI, installed once into a venv under `target/`.
//! - [`lab`]: network namespaces for the real dataplane (a network host, a public side, instances), removed
//!   on drop.
//! - [`workload`]: the operations the property and chaos tests run, and their dataplane check.
//! - [`wait_until`]: polling for a condition instead of sleeping.

pub mod lab;
pub mod openstack;
pub mod process;
pub mod workload;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnetwork::Ipv4Network;
use nimbus::client::Client;
use nimbus_actors::cloud::Drivers;
use nimbus_actors::cloud::{Cloud, CloudConfig};
use nimbus_actors::gateway::ServerLimits;
use nimbus_actors::timing::{LoginPolicy, Timing};
use nimbus_protocol::compute::Capacity;
use nimbus_runtime::Namespace;
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "admin-secret";

/// Timers short enough for tests, long enough not to fire spuriously on a loaded 2-core machine.
pub fn test_timing() -> Timing {
    Timing {
        call: Duration::from_secs(5),
        build: Duration::from_secs(10),
        report_interval: Duration::from_millis(200),
        service_down_after: Duration::from_secs(5),
        sweep_interval: Duration::from_millis(300),
        token_ttl: Duration::from_secs(3600),
        fixed_ip_reclaim_after: Duration::from_secs(2),
        reconcile_interval: Duration::from_millis(500),
        login: LoginPolicy::default(),
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `probe` every 20 ms until it has a value, and returns it; panics with `what` after `timeout`.
pub async fn wait_for_value<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct TestCloud {
    pub cloud: Cloud,
    pub admin: Client,
    pub dir: tempfile::TempDir,
}

/// What a test may change about its cloud.
#[derive(Clone, Debug)]
pub struct Options {
    pub hosts: u32,
    pub auto_assign_floating_ip: bool,
    pub capacity: Capacity,
    pub timing: Timing,
    pub drivers: Drivers,
    /// The default floating pool of the new cloud, and the interface its addresses are bound to.
    pub floating_range: Option<(Ipv4Network, String)>,
    /// Serve the Prometheus metrics on a port of their own (`Cloud::metrics_addr`).
    pub metrics: bool,
    pub server_limits: ServerLimits,
    /// The domain instances' names are under (`--dhcp-domain`).
    pub dhcp_domain: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hosts: 4,
            auto_assign_floating_ip: false,
            capacity: Capacity::default(),
            timing: test_timing(),
            drivers: Drivers::default(),
            floating_range: None,
            metrics: false,
            server_limits: ServerLimits::for_this_process(),
            dhcp_domain: "novalocal".into(),
        }
    }
}

static CLOUDS: AtomicU32 = AtomicU32::new(0);

impl TestCloud {
    pub async fn start() -> TestCloud {
        TestCloud::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestCloud {
        nimbus_runtime::telemetry::init("warn");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = TestCloud::config(&dir.path().join("data"), &options);
        let cloud = Cloud::start(config).await.expect("the cloud starts");
        let admin = Client::login(&cloud.url, "admin", ADMIN_PASSWORD, "admin").await.expect("admin logs in");
        TestCloud { cloud, admin, dir }
    }

    /// The configuration `start_with` starts its cloud with, for a test that starts one itself.
    pub fn config(dir: &std::path::Path, options: &Options) -> CloudConfig {
        let mut config = CloudConfig::new(dir);
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.fake_hosts = options.hosts;
        config.fake_capacity = options.capacity;
        config.admin_password = Some(ADMIN_PASSWORD.into());
        config.namespace =
            Namespace::new(&format!("t{}-{}", std::process::id(), CLOUDS.fetch_add(1, Ordering::SeqCst)));
        config.timing = options.timing.clone();
        config.auto_assign_floating_ip = options.auto_assign_floating_ip;
        config.drivers = options.drivers.clone();
        config.server_limits = options.server_limits.clone();
        config.dhcp_domain = options.dhcp_domain.clone();
        if options.metrics {
            config.metrics_listen = Some("127.0.0.1:0".parse().expect("an address"));
        }
        if let Some((range, interface)) = &options.floating_range {
            config.floating_range = Some(*range);
            config.public_interface = Some(interface.clone());
        }
        config
    }

    /// Stops the cloud and starts it again on the same data directory (a graceful restart).
    pub async fn restart(self, options: Options) -> TestCloud {
        let TestCloud { cloud, dir, .. } = self;
        cloud.shutdown().await;
        let cloud =
            Cloud::start(TestCloud::config(&dir.path().join("data"), &options)).await.expect("the cloud restarts");
        let admin = Client::login(&cloud.url, "admin", ADMIN_PASSWORD, "admin").await.expect("admin logs in");
        TestCloud { cloud, admin, dir }
    }

    pub fn url(&self) -> &str {
        &self.cloud.url
    }

    /// The cloud's data directory (inside `dir`, so the dataplane directory beside it is removed with it).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A new project with a user holding `role` on it; returns that user's client.
    /// The store's row of a fixed address, if it is in use (allocated, leased or reserved).
    pub fn fixed_ip_row(&self, address: &str) -> Option<nimbus_storage::records::FixedIp> {
        use nimbus_storage::Reads;
        let rows = self.cloud.store.read(|r| r.scan(&nimbus_storage::schema::FIXED_IPS)).expect("the store reads");
        rows.into_iter().map(|(_, row)| row).find(|row| row.address.to_string() == address)
    }

    pub async fn user_with_role(&self, role: &str) -> Client {
        self.user_in_mode("flat", role).await
    }

    /// A new project networked in `mode` (flat, flat_dhcp, vlan) with a user holding `role` on it.
    pub async fn user_in_mode(&self, mode: &str, role: &str) -> Client {
        let project = new_project(&self.admin, mode).await;
        self.user_on(&project, role).await
    }

    /// A new user with `role` on an existing project.
    pub async fn user_on(&self, project_id: &str, role: &str) -> Client {
        new_user_on(&self.admin, project_id, role).await.client(self.url()).await
    }

    /// Kills the actor named `local_name` and waits until a new incarnation runs under its name.
    pub async fn kill_and_wait_for_restart(&self, local_name: &str) {
        let old = self.running_id(local_name).unwrap_or_else(|| panic!("{local_name} is running"));
        ractor::registry::where_is(self.cloud.app.ns().actor_name(local_name)).expect("it was just running").kill();
        wait_until(&format!("{local_name} to be back"), Duration::from_secs(5), || async {
            self.running_id(local_name).is_some_and(|id| id != old)
        })
        .await;
    }

    /// The id of the running incarnation of the actor named `local_name` in this cloud, if one runs.
    pub fn running_id(&self, local_name: &str) -> Option<ractor::ActorId> {
        ractor::registry::where_is(self.cloud.app.ns().actor_name(local_name))
            .filter(|c| c.get_status() == ractor::ActorStatus::Running)
            .map(|c| c.get_id())
    }

    pub async fn shutdown(self) {
        self.cloud.shutdown().await;
    }
}

/// A user's credentials, to log in (again: after a restart the API may listen elsewhere).
#[derive(Clone, Debug)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub project: String,
}

impl Login {
    pub async fn client(&self, url: &str) -> Client {
        Client::login(url, &self.user, &self.password, &self.project).await.expect("the user logs in")
    }
}

/// A new project networked in `mode`; returns its id.
pub async fn new_project(admin: &Client, mode: &str) -> String {
    let n = CLOUDS.fetch_add(1, Ordering::SeqCst);
    let body = json!({"project": {"name": format!("p{n}-{}", std::process::id()), "network_mode": mode}});
    let project = admin.post("/identity/v3/projects", &body).await.unwrap();
    project["project"]["id"].as_str().unwrap().to_string()
}

/// A new user with `role` on the project.
pub async fn new_user_on(admin: &Client, project_id: &str, role: &str) -> Login {
    let n = CLOUDS.fetch_add(1, Ordering::SeqCst);
    let name = format!("u{n}-{}", std::process::id());
    let body = json!({"user": {"name": name, "password": "pw", "default_project_id": project_id}});
    let user = admin.post("/identity/v3/users", &body).await.unwrap();
    let user_id = user["user"]["id"].as_str().unwrap();
    admin
        .send(reqwest::Method::PUT, &format!("/identity/v3/projects/{project_id}/users/{user_id}/roles/{role}"), None)
        .await
        .unwrap();
    Login { user: name, password: "pw".into(), project: project_id.to_string() }
}

/// The default image's id.
pub async fn default_image(client: &Client) -> String {
    let images = client.get("/image/v2/images").await.unwrap();
    images["images"][0]["id"].as_str().unwrap().to_string()
}

/// Creates a server from the default image and flavor 1 and returns its id (without waiting).
pub async fn create_server(client: &Client, name: &str) -> String {
    let image = default_image(client).await;
    let created = client
        .post("/compute/v2.1/servers", &json!({"server": {"name": name, "imageRef": image, "flavorRef": "1"}}))
        .await
        .unwrap();
    created["server"]["id"].as_str().unwrap().to_string()
}

/// Sends a request and returns its status and JSON body, whatever the status (for tests of refusals).
pub async fn status(client: &Client, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = client.raw(method, path, body.as_ref()).await.expect("the cloud answers");
    (status.as_u16(), body)
}

pub async fn server(client: &Client, id: &str) -> Option<Value> {
    let (status, body) = client.raw(reqwest::Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await.unwrap();
    match status.as_u16() {
        200 => Some(body["server"].clone()),
        404 => None,
        other => panic!("GET server {id} answered {other}: {body}"),
    }
}

/// Waits until the server's status is `status` (e.g. ACTIVE or ERROR) and returns it.
pub async fn wait_for_status(client: &Client, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = server(client, id).await {
            if s["status"] == status {
                return s;
            }
            last = s;
        }
        assert!(Instant::now() < deadline, "server {id} did not reach {status}; last seen {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates a server (see [`create_server`]) and waits until it is ACTIVE; returns its view.
pub async fn boot_active(client: &Client, name: &str) -> Value {
    let id = create_server(client, name).await;
    wait_for_status(client, &id, "ACTIVE").await
}

/// Waits until the server is gone (404).
pub async fn wait_for_gone(client: &Client, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(s) = server(client, id).await {
        assert!(Instant::now() < deadline, "server {id} was not deleted; last seen {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fixed addresses a server view shows.
pub fn fixed_addresses(server: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(networks) = server["addresses"].as_object() {
        for addresses in networks.values() {
            for a in addresses.as_array().into_iter().flatten() {
                out.push(a["addr"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// Checks the store's cross-table invariants once nothing is in flight; returns the violations found:
/// pending operations, stuck instances, fixed or floating IPs and their holders out of step, broken indexes,
/// and usage that differs from the usage recomputed from the resources.
pub fn store_violations(store: &nimbus_storage::Store) -> Vec<String> {
    use nimbus_protocol::ids::ProjectId;
    use nimbus_storage::Pair;
    use nimbus_storage::Reads;
    use nimbus_storage::records::{Usage, VmState};
    use nimbus_storage::schema::*;
    use std::collections::BTreeMap;
    store
        .read(|r| {
            let mut bad = Vec::new();
            let instances = r.scan(&INSTANCES)?;
            let ports = r.scan(&PORTS)?;
            for (id, op) in r.scan(&OPERATIONS)? {
                bad.push(format!("operation {:?} on {id} is still pending", op.kind));
            }
            for (Pair(network, ip), row) in r.scan(&FIXED_IPS)? {
                if !row.allocated {
                    // Reserved by the operator, or released and waiting for the DHCP server's release.
                    if !row.reserved && row.released_at.is_none() {
                        bad.push(format!("fixed IP {} is held for no reason", row.address));
                    }
                    if let Some(at) = row.released_at.filter(|_| !row.reserved)
                        && r.get(&FIXED_RELEASES, &Pair(at, Pair(network, ip)))?.is_none()
                    {
                        bad.push(format!("fixed IP {} waits for a release the reclaim does not know of", row.address));
                    }
                    continue;
                }
                if row.instance.is_none() {
                    let port = ports.iter().find(|(_, p)| p.network == network && u32::from(p.address) == ip);
                    if !port.is_some_and(|(_, p)| p.device.is_none() && row.mac.as_ref() == Some(&p.mac)) {
                        bad.push(format!("fixed IP {} is allocated to no instance and no free port", row.address));
                    }
                    continue;
                }
                let owner = row.instance.and_then(|i| instances.iter().find(|(id, _)| *id == i));
                match owner {
                    Some((_, instance))
                        if instance.interfaces.iter().any(|f| f.network == network && u32::from(f.address) == ip) => {}
                    _ => bad.push(format!(
                        "fixed IP {} is allocated to {:?}, which does not hold it",
                        row.address, row.instance
                    )),
                }
            }
            let mut recomputed: BTreeMap<ProjectId, Usage> = BTreeMap::new();
            for (_, instance) in &instances {
                let u = recomputed.entry(instance.project).or_default();
                u.instances += 1;
                u.cores += u64::from(instance.flavor.vcpus);
                u.ram_mb += instance.flavor.ram_mb;
                u.fixed_ips += instance.interfaces.len() as u64;
            }
            for (id, port) in &ports {
                match port.device {
                    None => recomputed.entry(port.project).or_default().fixed_ips += 1,
                    Some(device) => {
                        let holds = instances
                            .iter()
                            .any(|(i, inst)| *i == device && inst.interfaces.iter().any(|f| f.id == *id));
                        if !holds {
                            bad.push(format!("port {id} is on {device}, which does not have it"));
                        }
                    }
                }
            }
            let macs: BTreeMap<_, _> = r.scan(&MACS)?.into_iter().collect();
            let in_use: BTreeMap<_, _> = instances
                .iter()
                .flat_map(|(_, i)| i.interfaces.iter().map(|f| (f.mac.clone(), f.id)))
                .chain(ports.iter().filter(|(_, p)| p.device.is_none()).map(|(id, p)| (p.mac.clone(), *id)))
                .collect();
            for (mac, port) in &in_use {
                if macs.get(mac) != Some(port) {
                    bad.push(format!("MAC {mac} of port {port} is not recorded as its in macs"));
                }
            }
            for (_, ip) in r.scan(&FLOATING_IPS)? {
                if let Some(project) = ip.project.filter(|_| !ip.auto_assigned) {
                    recomputed.entry(project).or_default().floating_ips += 1;
                }
                if let Some(id) = ip.instance {
                    let holds = instances
                        .iter()
                        .any(|(i, inst)| *i == id && inst.interfaces.iter().any(|f| f.floating.contains(&ip.address)));
                    if !holds {
                        bad.push(format!("floating IP {} points at {id}, which does not hold it", ip.address));
                    }
                }
            }
            for (project, usage) in r.scan(&USAGE)? {
                let expected = recomputed.remove(&project).unwrap_or_default();
                if usage != expected {
                    bad.push(format!("usage of project {project} is {usage:?}, recomputed {expected:?}"));
                }
            }
            for (project, usage) in recomputed {
                if usage != Usage::default() {
                    bad.push(format!("project {project} uses {usage:?} but has no usage record"));
                }
            }
            let counted = nimbus_storage::records::HostLoad::count(instances.iter().map(|(_, i)| i));
            let kept: BTreeMap<_, _> = r.scan(&HOST_LOADS)?.into_iter().filter(|(_, l)| l.instances > 0).collect();
            if kept != counted {
                bad.push(format!("the hosts' loads {kept:?} are not what their instances use: {counted:?}"));
            }
            for (id, instance) in &instances {
                for interface in &instance.interfaces {
                    let row = r.get(&FIXED_IPS, &Pair(interface.network, u32::from(interface.address)))?;
                    if row.and_then(|row| row.instance) != Some(*id) {
                        bad.push(format!("instance {id} holds {} without an allocation", interface.address));
                    }
                }
                let settled = [VmState::Active, VmState::Error, VmState::Stopped, VmState::Paused, VmState::Suspended];
                if instance.task_state.is_some() || !settled.contains(&instance.vm_state) {
                    bad.push(format!("instance {id} is stuck in {:?}/{:?}", instance.vm_state, instance.task_state));
                }
                let unaddressed = instance.interfaces.is_empty()
                    && instance.requested_nics != nimbus_storage::records::RequestedNics::None;
                if instance.vm_state != VmState::Error && (instance.host.is_none() || unaddressed) {
                    bad.push(format!("instance {id} is {:?} without a host or an address", instance.vm_state));
                }
                let at = nimbus_storage::NewestFirst::of(instance);
                if r.get(&INSTANCE_LIST, &at)? != Some(instance.project) {
                    bad.push(format!("instance {id} is missing from the list of all instances"));
                }
                if r.get(&PROJECT_INSTANCE_LIST, &Pair(instance.project, at))? != Some(*id) {
                    bad.push(format!("instance {id} is missing from its project's list"));
                }
                if let Some(host) = &instance.host
                    && !r.index_get(&INSTANCES_BY_HOST, host)?.contains(id)
                {
                    bad.push(format!("instance {id} is missing from its host's index"));
                }
            }
            let held: Vec<_> = r.scan(&FLOATING_HELD)?.into_iter().map(|(Pair(p, a), _)| (p, a)).collect();
            let holders: Vec<_> =
                r.scan(&FLOATING_IPS)?.into_iter().filter_map(|(a, ip)| ip.project.map(|p| (p, a))).collect();
            if held.iter().collect::<std::collections::BTreeSet<_>>() != holders.iter().collect() {
                bad.push(format!("floating_held {held:?} differs from the holders of the floating IPs {holders:?}"));
            }
            let networks = r.scan(&NETWORKS)?;
            for (id, network) in &networks {
                if r.get(&NETWORK_CHOICES, &nimbus_storage::NetworkChoice::of(network))? != Some(*id) {
                    bad.push(format!("network {} is missing from the network choices", network.label));
                }
            }
            if r.scan(&NETWORK_CHOICES)?.len() != networks.len() {
                bad.push(format!("the network choices do not hold exactly the {} networks", networks.len()));
            }
            let members: std::collections::BTreeSet<_> =
                r.scan(&SECURITY_GROUP_MEMBERS)?.into_iter().map(|(Pair(g, i), _)| (g, i)).collect();
            let memberships: std::collections::BTreeSet<_> =
                instances.iter().flat_map(|(id, i)| i.security_groups.iter().map(move |g| (*g, *id))).collect();
            if members != memberships {
                bad.push(format!(
                    "security_group_members {members:?} differs from the instances' groups {memberships:?}"
                ));
            }
            for (group, id) in &memberships {
                let project = instances.iter().find(|(i, _)| i == id).map(|(_, i)| i.project);
                if r.get(&SECURITY_GROUPS, group)?.map(|g| g.project) != project {
                    bad.push(format!("instance {id} is in security group {group}, which is not of its project"));
                }
            }
            let groups: BTreeMap<_, _> = r.scan(&SECURITY_GROUPS)?.into_iter().collect();
            for (id, group) in &groups {
                if r.get(&SECURITY_GROUP_NAMES, &Pair(group.project, group.name.clone()))? != Some(*id) {
                    bad.push(format!("security group {} is missing from its project's names", group.name));
                }
                for rule in &group.rules {
                    if r.get(&SECURITY_RULES, &rule.id)? != Some(*id) {
                        bad.push(format!(
                            "rule {} of security group {} is missing from the rules",
                            rule.id, group.name
                        ));
                    }
                }
            }
            for (Pair(project, name), id) in r.scan(&SECURITY_GROUP_NAMES)? {
                if groups.get(&id).is_none_or(|g| g.project != project || g.name != name) {
                    bad.push(format!("the name {name} of project {project} names no such group ({id})"));
                }
            }
            for (rule, id) in r.scan(&SECURITY_RULES)? {
                if groups.get(&id).is_none_or(|g| !g.rules.iter().any(|r| r.id == rule)) {
                    bad.push(format!("rule {rule} is listed under group {id}, which does not have it"));
                }
            }
            let listed = (r.scan(&INSTANCE_LIST)?.len(), r.scan(&PROJECT_INSTANCE_LIST)?.len());
            if listed != (instances.len(), instances.len()) {
                bad.push(format!("the list orders hold {listed:?} entries for {} instances", instances.len()));
            }
            Ok::<_, nimbus_storage::StoreError>(bad)
        })
        .expect("reading the store")
}
