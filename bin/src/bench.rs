//! Benchmarks. `nimbus bench boot` boots servers through the API as fast as it can and reports throughput,
//! time-to-ACTIVE percentiles and CPU per boot, against an in-process cloud (the default) or a running one
//! (`--against`, with `--url` and the login options), optionally over many projects; `bench scale` runs it at
//! several host counts. `bench list` times server lists a page at a time over 100,000 ACTIVE instances.
//! `bench ips` measures IP allocations; `bench netns` boots real netns instances;
//! `bench auth` attacks the API with wrong passwords and idle sockets and measures what it costs other clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nimbus_actors::app::floating_ips::{self, Caller};
use nimbus_actors::app::servers::{self, NewServers, ServerFilters};
use nimbus_actors::app::{identity, interfaces};
use nimbus_actors::cloud::{Cloud, CloudConfig};
use nimbus_actors::kernel::process;
use nimbus_protocol::compute::Capacity;
use nimbus_protocol::network::NetworkClient;
use nimbus_protocol::trace::Trace;
use nimbus_runtime::Namespace;
use nimbus_storage::records::VmState;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::args::ApiArgs;
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Boot servers concurrently until ACTIVE, then delete them.
    Boot(BootArgs),
    /// The boot workload at 10, 100, 1,000 and 10,000 fake hosts (in-process clouds), a row each.
    Scale(ScaleArgs),
    /// Server list latency, a page of 100 at a time, over many ACTIVE instances on many fake hosts (an
    /// in-process cloud), with and without filters, and paging to the end.
    List(ListArgs),
    /// Fixed- and floating-IP allocations per second, in process and through the API.
    Ips(IpsArgs),
    /// Boot netns instances on the real dataplane until each answers HTTP on its fixed IP (root).
    Netns(NetnsArgs),
    /// Wrong-password logins from many clients at once, then a flood of idle connections, against an
    /// in-process cloud: its memory, and the latency another client sees meanwhile.
    Auth(AuthArgs),
}

#[derive(Args, Debug)]
pub struct AuthArgs {
    /// Clients sending wrong-password logins at once.
    #[arg(long, default_value_t = 64)]
    pub attackers: usize,
    /// How long they keep at it, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Idle connections opened at once afterwards.
    #[arg(long, default_value_t = 2000)]
    pub idle: usize,
    /// Print one JSON object with the results as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct NetnsArgs {
    /// How many instances to boot.
    #[arg(long, default_value_t = 40)]
    pub servers: usize,
    /// How many boots are in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The network mode: `flat` (address injected) or `flat_dhcp` (address from dnsmasq).
    #[arg(long, default_value = "flat_dhcp")]
    pub mode: String,
}

#[derive(Args, Debug)]
pub struct IpsArgs {
    /// Fixed IPs to allocate (on a /16).
    #[arg(long, default_value_t = 20000)]
    pub fixed: usize,
    /// Floating IPs to allocate in process, and again through the API.
    #[arg(long, default_value_t = 4000)]
    pub floating: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
}

#[derive(Args, Debug)]
pub struct BootArgs {
    /// How many servers to boot.
    #[arg(long, default_value_t = 500)]
    pub servers: usize,
    /// How many boots are in flight at once.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Fake hosts of the in-process cloud.
    #[arg(long, default_value_t = 8)]
    pub fake_hosts: u32,
    /// Spread the boots over this many new projects, each with a member user and no quota limit (0: all
    /// in the admin project).
    #[arg(long, default_value_t = 0)]
    pub projects: usize,
    /// Benchmark a running cloud instead of an in-process one (with --password etc.).
    #[arg(long)]
    pub against: bool,
    /// Print one JSON object with the results as the last line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// ACTIVE instances to list (booted before the timing, in one project).
    #[arg(long, default_value_t = 100_000)]
    pub instances: usize,
    /// Fake hosts of the in-process cloud.
    #[arg(long, default_value_t = 10_000)]
    pub fake_hosts: u32,
    /// Servers per page (`limit`).
    #[arg(long, default_value_t = 100)]
    pub page: usize,
    /// How many times each first-page list is timed.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Print one JSON object with every row as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// The fake host counts, one in-process cloud and one row each.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    pub hosts: Vec<u32>,
    #[arg(long, default_value_t = 2000)]
    pub servers: usize,
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Spread the boots over this many projects (0: the admin's).
    #[arg(long, default_value_t = 0)]
    pub projects: usize,
    /// A row that takes longer is reported as not finished.
    #[arg(long, default_value_t = 300)]
    pub row_timeout_secs: u64,
    /// Print one JSON object with every row as the last line.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Boot(args) => boot(args).await,
        BenchCommand::Scale(args) => scale(args).await,
        BenchCommand::List(args) => list(args).await,
        BenchCommand::Ips(args) => ips(args).await,
        BenchCommand::Netns(args) => netns(args).await,
        BenchCommand::Auth(args) => auth(args).await,
    }
}

/// Runs `n` jobs with at most `concurrency` in flight; returns the elapsed time.
async fn run_concurrently<F, Fut>(n: usize, concurrency: usize, job: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency));
    let job = Arc::new(job);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (gate, job) = (gate.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            job(i).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

fn rate(n: usize, took: Duration) -> String {
    format!("{:>9.0}/s  ({n} in {:.2} s)", n as f64 / took.as_secs_f64(), took.as_secs_f64())
}

async fn ips(args: IpsArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let mut config = CloudConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse().expect("an address");
    // No hosts: the instances given addresses below go to ERROR at once instead of being built (their
    // builds would allocate the addresses themselves).
    config.fake_hosts = 0;
    config.admin_password = Some("bench".into());
    config.namespace = Namespace::new("bench-ips");
    config.fixed_range = Some("10.0.0.0/16".parse().expect("a valid CIDR"));
    config.floating_range = Some("198.18.0.0/16".parse().expect("a valid CIDR"));
    let cloud = Cloud::start(config).await?;
    let app = cloud.app.clone();
    let admin = Client::login(&cloud.url, "admin", "bench", "admin").await?;
    let (_, auth) =
        identity::password_login(&app, "admin", "bench", "admin", std::net::Ipv4Addr::LOCALHOST.into()).await?;
    let image = admin.get("/image/v2/images").await?["images"][0]["id"].as_str().context("an image")?.to_string();

    // The instances to give addresses to, created as the API creates them (quota charged); with no host to
    // build on they end in ERROR, without addresses.
    println!("preparing {} instances …", args.fixed);
    let mut ids = Vec::with_capacity(args.fixed);
    for chunk in 0..args.fixed.div_ceil(100) {
        let new = NewServers {
            name: format!("ip-{chunk}"),
            image: image.clone(),
            flavor: "1".into(),
            networks: Default::default(),
            count: 100.min(args.fixed - chunk * 100) as u32,
            key_name: None,
            security_groups: Vec::new(),
            user_data: None,
            metadata: Default::default(),
            description: None,
            nic_tags: Vec::new(),
        };
        ids.extend(servers::create(&app, &Trace::none(), &auth, new).await?.into_iter().map(|i| i.id));
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed = servers::list(&app, &auth, &ServerFilters::default())?;
        if listed.iter().all(|i| i.vm_state == VmState::Error && i.task_state.is_none()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the prepared instances did not all settle in ERROR within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What a build's network step does: the allocation transaction, then the network host applies it.
    let ids = Arc::new(ids);
    let before = app.store_stats();
    let fixed_app = app.clone();
    let fixed = run_concurrently(args.fixed, args.concurrency, move |i| {
        let (app, id) = (fixed_app.clone(), ids[i]);
        async move {
            let changes = interfaces::allocate(&app, id).await?;
            NetworkClient::new(app.ns(), app.timing().call).apply(&Trace::none(), changes).await?;
            Ok(())
        }
    })
    .await?;
    let after = app.store_stats();
    println!("fixed IPs, in process (allocation and apply, durable): {}", rate(args.fixed, fixed));
    println!(
        "        {} durable commits for {} writes ({:.1} writes per commit)",
        after.commits - before.commits,
        after.writes - before.writes,
        (after.writes - before.writes) as f64 / (after.commits - before.commits).max(1) as f64
    );

    let caller = Caller { project: auth.project, admin: true };
    let floating_app = app.clone();
    let floating = run_concurrently(args.floating, args.concurrency, move |_| {
        let app = floating_app.clone();
        async move {
            floating_ips::allocate(&app, caller, None).await?;
            Ok(())
        }
    })
    .await?;
    println!("floating IPs, in process (allocation, durable): {}", rate(args.floating, floating));

    let http = run_concurrently(args.floating, args.concurrency.min(64), move |_| {
        let admin = admin.clone();
        async move {
            admin.post("/compute/v2.1/os-floating-ips", &json!({})).await?;
            Ok(())
        }
    })
    .await?;
    println!("floating IPs, through the API (POST os-floating-ips): {}", rate(args.floating, http));
    cloud.shutdown().await;
    Ok(())
}

/// The benchmark's network namespaces (the network host and every instance), removed with everything
/// running in them when the benchmark ends, also on failure.
struct BenchNamespaces {
    prefix: String,
}

impl Drop for BenchNamespaces {
    fn drop(&mut self) {
        for ns in process::namespaces_with_prefix(&self.prefix) {
            process::remove_namespace_now(&ns);
        }
    }
}

async fn netns(args: NetnsArgs) -> anyhow::Result<()> {
    use nimbus_actors::cloud::{DataplaneKind, Drivers, VirtKind};
    nimbus_actors::kernel::check_prerequisites(&["ip", "nft", "dnsmasq", "busybox"])?;
    let prefix = format!("nimbus-bench-{}-", std::process::id());
    let namespaces = BenchNamespaces { prefix: prefix.clone() };
    let host = format!("{prefix}host");
    process::ensure_namespace(&host).await?;
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let mut config = CloudConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse().expect("an address");
    config.fake_capacity = Capacity { vcpus: 4096, ram_mb: 4 << 20, disk_gb: 1 << 20 };
    config.admin_password = Some("bench".into());
    config.fixed_range = Some("10.0.0.0/20".parse().expect("a valid CIDR"));
    config.namespace = Namespace::new("bench-netns");
    config.drivers = Drivers {
        dataplane: DataplaneKind::Linux,
        virt: VirtKind::Netns,
        host_netns: Some(host.clone()),
        instance_prefix: format!("{prefix}i-"),
        instance_httpd: true,
        ..Drivers::default()
    };
    let cloud = Cloud::start(config).await?;
    let admin = Client::login(&cloud.url, "admin", "bench", "admin").await?;
    if args.mode != "flat" {
        let network =
            json!({"network": {"label": "bench", "cidr": "10.1.0.0/20", "mode": args.mode, "bridge": "brbench"}});
        admin.post("/compute/v2.1/os-networks", &network).await?;
    }
    let project =
        admin.post("/identity/v3/projects", &json!({"project": {"name": "bench", "network_mode": args.mode}})).await?;
    let project = project["project"]["id"].as_str().context("a project id")?.to_string();
    let user = json!({"user": {"name": "bench", "password": "bench", "default_project_id": project}});
    let user = admin.post("/identity/v3/users", &user).await?;
    let user = user["user"]["id"].as_str().context("a user id")?.to_string();
    admin
        .send(reqwest::Method::PUT, &format!("/identity/v3/projects/{project}/users/{user}/roles/member"), None)
        .await?;
    let unlimited = json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1, "fixed_ips": -1}});
    admin.send(reqwest::Method::PUT, &format!("/compute/v2.1/os-quota-sets/{project}"), Some(&unlimited)).await?;
    let client = Client::login(&cloud.url, "bench", "bench", &project).await?;
    let images = client.get("/image/v2/images").await?;
    let image = images["images"][0]["id"].as_str().context("the cloud has no image")?.to_string();
    println!(
        "booting {} netns instances ({} networking), {} at a time, until each answers HTTP on its fixed IP",
        args.servers, args.mode, args.concurrency
    );

    let gate = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.servers);
    for n in 0..args.servers {
        let (client, image, gate, host) = (client.clone(), image.clone(), gate.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let t0 = Instant::now();
            let name = format!("bench-{n}");
            let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": "1"}});
            let created = client.post("/compute/v2.1/servers", &body).await?;
            let id = created["server"]["id"].as_str().context("no server id")?.to_string();
            wait_active(&client, &id).await?;
            let active = t0.elapsed();
            let server = client.get(&format!("/compute/v2.1/servers/{id}")).await?;
            let addresses = server["server"]["addresses"].as_object().context("no addresses")?;
            let first = addresses.values().next().and_then(|a| a[0]["addr"].as_str()).context("no address")?;
            let address: std::net::Ipv4Addr = first.parse()?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let answer = nimbus_actors::kernel::http_get(Some(&host), (address, 80).into()).await;
                if answer.as_deref().is_ok_and(|body| body == name) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{name} ({address}) did not answer within 60 s: {answer:?}");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, anyhow::Error>((id, active, t0.elapsed()))
        }));
    }
    let (mut ids, mut active, mut reachable) = (Vec::new(), Vec::new(), Vec::new());
    for task in tasks {
        let (id, a, r) = task.await??;
        ids.push(id);
        active.push(a);
        reachable.push(r);
    }
    let took = started.elapsed();
    active.sort();
    reachable.sort();
    println!("boot:      {}", rate(args.servers, took));
    println!(
        "           to ACTIVE    p50 {:.0} ms  p95 {:.0} ms",
        ms(percentile(&active, 50.0)),
        ms(percentile(&active, 95.0))
    );
    println!(
        "           to reachable p50 {:.0} ms  p95 {:.0} ms",
        ms(percentile(&reachable, 50.0)),
        ms(percentile(&reachable, 95.0))
    );
    let deleting = Instant::now();
    for id in &ids {
        client.delete(&format!("/compute/v2.1/servers/{id}")).await?;
    }
    let instances = format!("{prefix}i-");
    let deadline = Instant::now() + PATIENCE;
    while !process::namespaces_with_prefix(&instances).is_empty() {
        if Instant::now() > deadline {
            bail!("instance namespaces were still there {PATIENCE:?} after their deletes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("delete:    {}", rate(args.servers, deleting.elapsed()));
    cloud.shutdown().await;
    drop(namespaces);
    Ok(())
}

/// How long a benchmark waits for one server or one cleanup before it gives up with an error.
const PATIENCE: Duration = Duration::from_secs(120);

/// The part of a server's view a poll reads: parsing only these fields keeps the benchmark's clients cheap.
#[derive(serde::Deserialize)]
struct Polled {
    server: PolledServer,
}

#[derive(serde::Deserialize)]
struct PolledServer {
    status: String,
    #[serde(default)]
    fault: Option<PolledFault>,
}

#[derive(serde::Deserialize)]
struct PolledFault {
    message: String,
}

/// Polls server `id` until it is ACTIVE, or fails with its fault on ERROR, for at most `PATIENCE`: every 5 ms
/// at first and less often the longer it takes (up to every 50 ms), as hundreds of boots in flight polling
/// every 5 ms would load the cloud more than the boots do.
async fn wait_active(client: &Client, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(5);
    let path = format!("/compute/v2.1/servers/{id}");
    loop {
        let server = client.get_as::<Polled>(&path).await?.server;
        match server.status.as_str() {
            "ACTIVE" => return Ok(()),
            "ERROR" => bail!("server {id} went to ERROR: {}", server.fault.map(|f| f.message).unwrap_or_default()),
            status if Instant::now() > deadline => bail!("server {id} is still {status} after {PATIENCE:?}"),
            _ => {
                tokio::time::sleep(pause).await;
                pause = (pause * 3 / 2).min(Duration::from_millis(50));
            }
        }
    }
}

/// This process's resident memory, in MiB (the in-process cloud and the benchmark's clients).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    kib.unwrap_or(0.0) / 1024.0
}

async fn auth(args: AuthArgs) -> anyhow::Result<()> {
    let limit = nimbus_actors::gateway::server::raise_open_file_limit().context("raising the open-file limit")?;
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let mut config = CloudConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("an address");
    config.admin_password = Some("bench".into());
    config.namespace = Namespace::new("bench-auth");
    let cap = config.server_limits.max_connections;
    let cloud = Cloud::start(config).await?;
    let url = cloud.url.clone();
    let admin = Client::login(&url, "admin", "bench", "admin").await?;
    let rss_before = rss_mib();
    println!(
        "{} clients send wrong passwords for {} s; another client lists servers meanwhile (open files {limit}, \
         connection cap {cap}) …",
        args.attackers, args.seconds
    );
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let attackers: Vec<_> = (0..args.attackers)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                    "name": if n % 2 == 0 { "admin".to_string() } else { format!("nobody-{n}") }, "password": "wrong"}}},
                    "scope": {"project": {"name": "admin"}}}});
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                while Instant::now() < until {
                    let status = match http.post(format!("{url}/identity/v3/auth/tokens")).json(&body).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    *statuses.entry(status).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut rss_peak = rss_before;
    while Instant::now() < until {
        let started = Instant::now();
        admin.get("/compute/v2.1/servers").await.context("the other client's request failed")?;
        latencies.push(started.elapsed());
        rss_peak = rss_peak.max(rss_mib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut logins = std::collections::BTreeMap::<u16, usize>::new();
    for attacker in attackers {
        for (status, n) in attacker.await? {
            *logins.entry(status).or_default() += n;
        }
    }
    rss_peak = rss_peak.max(rss_mib());
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));

    println!("opening {} idle connections at once …", args.idle);
    let mut idle = Vec::with_capacity(args.idle);
    for _ in 0..args.idle {
        match tokio::net::TcpStream::connect(cloud.addr).await {
            Ok(stream) => idle.push(stream),
            Err(e) => bail!("opening idle connection {} failed: {e}", idle.len() + 1),
        }
    }
    // A new connection (a new HTTP client), with the token the other client got before the attack: logins
    // from this address are throttled by now, as they should be.
    let started = Instant::now();
    let fresh = reqwest::Client::new()
        .get(format!("{url}/compute/v2.1/servers"))
        .header("x-auth-token", admin.token())
        .send()
        .await
        .context("another client got no answer while the idle connections were open")?;
    let answered_in = started.elapsed();
    if !fresh.status().is_success() {
        bail!("another client was answered {} while the idle connections were open", fresh.status());
    }
    drop(idle);
    cloud.shutdown().await;

    let total: usize = logins.values().sum();
    println!();
    println!("  wrong-password logins  {total} in {} s, answers {logins:?}", args.seconds);
    println!("  resident memory        {rss_before:.0} MiB before, {rss_peak:.0} MiB at most");
    println!("  other client           {} requests, p50 {:.1} ms, p99 {:.1} ms", latencies.len(), ms(p50), ms(p99));
    println!("  with {} idle sockets  another client was answered after {:.1} ms", args.idle, ms(answered_in));
    if args.json {
        let result = json!({
            "attackers": args.attackers, "seconds": args.seconds, "logins": total,
            "login_statuses": logins.iter().map(|(s, n)| (s.to_string(), n)).collect::<std::collections::BTreeMap<_, _>>(),
            "rss_mib_before": rss_before, "rss_mib_peak": rss_peak,
            "other_requests": latencies.len(), "other_p50_ms": ms(p50), "other_p99_ms": ms(p99),
            "idle_connections": args.idle, "connection_cap": cap, "answered_with_idle_ms": ms(answered_in),
        });
        println!("{result}");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The boot workload: `servers` boots, `concurrency` at a time, spread round-robin over the clients'
/// projects; then the deletes, as the boots went in.
struct BootRun {
    servers: usize,
    concurrency: usize,
}

/// What a boot workload measured.
struct BootResult {
    boot_time: Duration,
    accepted: Vec<Duration>,
    active: Vec<Duration>,
    delete_time: Duration,
    /// CPU time of this process (user + system) over the boots, if the cloud runs in it.
    cpu: Duration,
    /// The part of `cpu` the benchmark's own clients used (their runtime's threads).
    client_cpu: Duration,
}

impl BootResult {
    fn servers_per_sec(&self) -> f64 {
        self.active.len() as f64 / self.boot_time.as_secs_f64()
    }

    fn cpu_ms_per_boot(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e3 / self.active.len().max(1) as f64
    }

    /// The cloud's share: the process less the clients.
    fn cloud_cpu_ms_per_boot(&self) -> f64 {
        self.cpu.saturating_sub(self.client_cpu).as_secs_f64() * 1e3 / self.active.len().max(1) as f64
    }
}

/// The clients' runtime; shut down without waiting when the run ends or is given up (a runtime may not
/// block inside another's task).
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl ClientRuntime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("the runtime lives until dropped").handle()
    }
}

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The name of the threads the benchmark's clients run on, so their CPU is told apart from the cloud's.
const CLIENT_THREAD: &str = "bench-client";

/// User plus system CPU time of this process's threads named `name`, from `/proc/self/task` (in clock ticks,
/// so to 10 ms or so; over thousands of boots that is exact enough).
fn thread_cpu_time(name: &str) -> Duration {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command (which may hold spaces) end with ')': state is the first, utime the 12th.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(11) + field(12);
    }
    Duration::from_micros(ticks * 1_000_000 / tick)
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |u| {
        let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
        tv(u.user_time()) + tv(u.system_time())
    })
}

impl BootRun {
    /// Runs the boots on a runtime of their own (threads named [`CLIENT_THREAD`]), so the CPU they use is
    /// told apart from the cloud's.
    async fn run(&self, clients: &[Client]) -> anyhow::Result<BootResult> {
        let runtime = ClientRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(CLIENT_THREAD)
                .enable_all()
                .build()
                .context("the benchmark clients' runtime")?,
        ));
        let clients: Vec<Client> = clients.iter().map(Client::with_own_connections).collect();
        self.boot_and_delete(runtime.handle(), &clients).await
    }

    async fn boot_and_delete(&self, on: &tokio::runtime::Handle, clients: &[Client]) -> anyhow::Result<BootResult> {
        // On the clients' runtime too, so every connection of theirs is driven there.
        let first = clients[0].clone();
        let images = on.spawn(async move { first.get("/image/v2/images").await }).await??;
        let image = images["images"][0]["id"].as_str().context("the cloud has no image")?.to_string();
        let gate = Arc::new(Semaphore::new(self.concurrency));
        let (started, cpu_before, client_before) = (Instant::now(), cpu_time(), thread_cpu_time(CLIENT_THREAD));
        let mut tasks = Vec::with_capacity(self.servers);
        for n in 0..self.servers {
            let (client, image, gate) = (clients[n % clients.len()].clone(), image.clone(), gate.clone());
            tasks.push(on.spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore open");
                let t0 = Instant::now();
                let body = json!({"server": {"name": format!("bench-{n}"), "imageRef": image, "flavorRef": "1"}});
                let created = client.post("/compute/v2.1/servers", &body).await?;
                let accepted = t0.elapsed();
                let id = created["server"]["id"].as_str().context("no server id")?.to_string();
                wait_active(&client, &id).await?;
                Ok::<_, anyhow::Error>((n, id, accepted, t0.elapsed()))
            }));
        }
        let mut ids = Vec::new();
        let (mut accepted, mut active) = (Vec::new(), Vec::new());
        for task in tasks {
            let (n, id, a, t) = task.await??;
            ids.push((n % clients.len(), id));
            accepted.push(a);
            active.push(t);
        }
        let (boot_time, cpu) = (started.elapsed(), cpu_time().saturating_sub(cpu_before));
        let client_cpu = thread_cpu_time(CLIENT_THREAD).saturating_sub(client_before);
        accepted.sort();
        active.sort();

        let deleting = Instant::now();
        let (clients, ids) = (Arc::new(clients.to_vec()), Arc::new(ids));
        let (deleters, to_delete) = (clients.clone(), ids.clone());
        run_concurrently(ids.len(), self.concurrency, move |i| {
            let (owner, id) = &to_delete[i];
            let (client, path) = (deleters[*owner].clone(), format!("/compute/v2.1/servers/{id}"));
            async move {
                client.delete(&path).await?;
                Ok(())
            }
        })
        .await?;
        let deadline = Instant::now() + PATIENCE;
        for (owner, id) in ids.iter() {
            while clients[*owner].raw(reqwest::Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await?.0
                != reqwest::StatusCode::NOT_FOUND
            {
                if Instant::now() > deadline {
                    bail!("the deleted servers were not all gone after {PATIENCE:?}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(BootResult { boot_time, accepted, active, delete_time: deleting.elapsed(), cpu, client_cpu })
    }
}

/// An in-process cloud for the boot benchmarks: `hosts` fake hosts with room for the whole run.
async fn boot_cloud(hosts: u32, name: &str) -> anyhow::Result<(Cloud, tempfile::TempDir, Duration)> {
    boot_cloud_on(hosts, name, "10.0.0.0/16").await
}

/// The same with a fixed range of its own (a /16 holds 65,000 instances).
async fn boot_cloud_on(hosts: u32, name: &str, fixed: &str) -> anyhow::Result<(Cloud, tempfile::TempDir, Duration)> {
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let mut config = CloudConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("an address");
    config.fake_hosts = hosts;
    config.fake_capacity = Capacity { vcpus: 4096, ram_mb: 4 << 20, disk_gb: 1 << 20 };
    config.admin_password = Some("bench".into());
    config.fixed_range = Some(fixed.parse().context("a valid CIDR")?);
    config.namespace = Namespace::new(name);
    let started = Instant::now();
    let cloud = Cloud::start(config).await?;
    Ok((cloud, dir, started.elapsed()))
}

/// `n` new projects, each with a member user and no quota limit; their clients. With `n` = 0, the admin's.
async fn project_clients(admin: &Client, n: usize) -> anyhow::Result<Vec<Client>> {
    if n == 0 {
        return Ok(vec![admin.clone()]);
    }
    // Unique across runs against the same cloud.
    let run = format!("{}-{}", std::process::id(), nimbus_storage::records::now_ms());
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let (project, user) = (format!("bench-{run}-{i}"), format!("bench-{run}-{i}"));
        let created = admin.post("/identity/v3/projects", &json!({"project": {"name": project}})).await?;
        let id = created["project"]["id"].as_str().context("no project id")?.to_string();
        let body = json!({"user": {"name": user, "password": "bench", "default_project_id": id}});
        let made = admin.post("/identity/v3/users", &body).await?;
        let user_id = made["user"]["id"].as_str().context("no user id")?;
        admin
            .send(reqwest::Method::PUT, &format!("/identity/v3/projects/{id}/users/{user_id}/roles/member"), None)
            .await?;
        let unlimited = json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1, "fixed_ips": -1}});
        admin.send(reqwest::Method::PUT, &format!("/compute/v2.1/os-quota-sets/{id}"), Some(&unlimited)).await?;
        clients.push(Client::login(admin.base(), &user, "bench", &id).await?);
    }
    Ok(clients)
}

fn print_boot(result: &BootResult, concurrency: usize, in_process: bool) {
    println!(
        "boot:   {:>8.1} servers/s  ({} servers in {:.2} s)",
        result.servers_per_sec(),
        result.active.len(),
        result.boot_time.as_secs_f64()
    );
    println!(
        "        accepted (202) p50 {:.1} ms  p99 {:.1} ms",
        ms(percentile(&result.accepted, 50.0)),
        ms(percentile(&result.accepted, 99.0))
    );
    println!(
        "        to ACTIVE      p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
        ms(percentile(&result.active, 50.0)),
        ms(percentile(&result.active, 95.0)),
        ms(percentile(&result.active, 99.0))
    );
    if in_process {
        println!(
            "        CPU            {:.3} ms per boot in the cloud, {:.3} ms with its clients (this process)",
            result.cloud_cpu_ms_per_boot(),
            result.cpu_ms_per_boot()
        );
    }
    println!(
        "delete: {:>8.1} servers/s  ({} at a time, all gone in {:.2} s)",
        result.active.len() as f64 / result.delete_time.as_secs_f64(),
        concurrency,
        result.delete_time.as_secs_f64()
    );
}

fn boot_json(result: &BootResult) -> serde_json::Value {
    json!({
        "servers": result.active.len(),
        "servers_per_sec": result.servers_per_sec(),
        "accepted_p50_ms": ms(percentile(&result.accepted, 50.0)),
        "accepted_p99_ms": ms(percentile(&result.accepted, 99.0)),
        "active_p50_ms": ms(percentile(&result.active, 50.0)),
        "active_p95_ms": ms(percentile(&result.active, 95.0)),
        "active_p99_ms": ms(percentile(&result.active, 99.0)),
        "cpu_ms_per_boot": result.cpu_ms_per_boot(),
        "cloud_cpu_ms_per_boot": result.cloud_cpu_ms_per_boot(),
        "delete_secs": result.delete_time.as_secs_f64(),
    })
}

async fn boot(args: BootArgs) -> anyhow::Result<()> {
    let (admin, cloud) = if args.against {
        (args.api.login().await?, None)
    } else {
        let (cloud, dir, _) = boot_cloud(args.fake_hosts, "bench").await?;
        (Client::login(&cloud.url, "admin", "bench", "admin").await?, Some((cloud, dir)))
    };
    let clients = project_clients(&admin, args.projects).await?;
    println!(
        "booting {} servers (m1.tiny), {} at a time, over {} project(s), on {}",
        args.servers,
        args.concurrency,
        clients.len(),
        admin.base()
    );
    let result = BootRun { servers: args.servers, concurrency: args.concurrency }.run(&clients).await?;
    print_boot(&result, args.concurrency, cloud.is_some());
    let mut summary = boot_json(&result);
    summary["projects"] = json!(clients.len());
    if let Some((cloud, _dir)) = cloud {
        let stats = cloud.app.store_stats();
        println!(
            "store:  {} durable commits for {} writes ({:.1} writes per commit)",
            stats.commits,
            stats.writes,
            stats.writes as f64 / stats.commits.max(1) as f64
        );
        summary["store_commits"] = json!(stats.commits);
        summary["store_writes"] = json!(stats.writes);
        cloud.shutdown().await;
    } else {
        summary["cpu_ms_per_boot"] = serde_json::Value::Null;
        summary["cloud_cpu_ms_per_boot"] = serde_json::Value::Null;
    }
    if args.json {
        println!("{summary}");
    }
    Ok(())
}

/// The boot workload at several host counts, one in-process cloud each.
async fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    println!(
        "{:>7}  {:>9}  {:>10}  {:>9}  {:>9}  {:>15}  {:>17}  {:>8}",
        "hosts", "start (s)", "servers/s", "p50 (ms)", "p99 (ms)", "cloud CPU ms/boot", "with clients", "RSS MiB"
    );
    let mut rows = Vec::new();
    for &hosts in &args.hosts {
        let (cloud, _dir, start_up) = boot_cloud(hosts, &format!("bench-scale-{hosts}")).await?;
        let admin = Client::login(&cloud.url, "admin", "bench", "admin").await?;
        let clients = project_clients(&admin, args.projects).await?;
        let run = BootRun { servers: args.servers, concurrency: args.concurrency };
        let limit = Duration::from_secs(args.row_timeout_secs);
        let outcome = tokio::time::timeout(limit, run.run(&clients)).await;
        let rss = rss_mib();
        cloud.shutdown().await;
        match outcome {
            Ok(result) => {
                let result = result?;
                println!(
                    "{hosts:>7}  {:>9.2}  {:>10.1}  {:>9.1}  {:>9.1}  {:>17.3}  {:>12.3}  {rss:>8.0}",
                    start_up.as_secs_f64(),
                    result.servers_per_sec(),
                    ms(percentile(&result.active, 50.0)),
                    ms(percentile(&result.active, 99.0)),
                    result.cloud_cpu_ms_per_boot(),
                    result.cpu_ms_per_boot(),
                );
                let mut row = boot_json(&result);
                row["hosts"] = json!(hosts);
                row["start_secs"] = json!(start_up.as_secs_f64());
                row["rss_mib"] = json!(rss);
                rows.push(row);
            }
            Err(_) => {
                println!("{hosts:>7}  {:>9.2}  did not finish in {} s", start_up.as_secs_f64(), limit.as_secs());
                rows.push(json!({"hosts": hosts, "start_secs": start_up.as_secs_f64(), "finished": false}));
            }
        }
    }
    if args.json {
        println!("{}", json!({"servers": args.servers, "concurrency": args.concurrency, "rows": rows}));
    }
    Ok(())
}

/// One timed list: what it asks, and how long each request took.
struct ListRow {
    what: String,
    took: Vec<Duration>,
    servers: usize,
}

impl ListRow {
    fn print(&self) {
        println!(
            "{:<44}  {:>8}  {:>9.2}  {:>9.2}  {:>9.2}  {:>9}",
            self.what,
            self.took.len(),
            ms(percentile(&self.took, 50.0)),
            ms(percentile(&self.took, 99.0)),
            ms(*self.took.last().unwrap_or(&Duration::ZERO)),
            self.servers
        );
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "list": self.what,
            "requests": self.took.len(),
            "p50_ms": ms(percentile(&self.took, 50.0)),
            "p99_ms": ms(percentile(&self.took, 99.0)),
            "max_ms": ms(*self.took.last().unwrap_or(&Duration::ZERO)),
            "servers": self.servers,
        })
    }
}

/// Times `samples` requests of `path`, one after the other.
async fn time_list(client: &Client, what: &str, path: &str, samples: usize) -> anyhow::Result<ListRow> {
    let mut took = Vec::with_capacity(samples);
    let mut servers = 0;
    for _ in 0..samples {
        let t0 = Instant::now();
        let page = client.get(path).await?;
        took.push(t0.elapsed());
        servers = page["servers"].as_array().map_or(0, Vec::len);
    }
    took.sort();
    Ok(ListRow { what: what.into(), took, servers })
}

/// Follows the `next` links from `first` to the end of the list, timing each page.
async fn time_paging(client: &Client, what: &str, first: &str) -> anyhow::Result<ListRow> {
    let (mut took, mut servers) = (Vec::new(), 0);
    let mut path = Some(first.to_string());
    while let Some(p) = path.take() {
        let t0 = Instant::now();
        let page = client.get(&p).await?;
        took.push(t0.elapsed());
        servers += page["servers"].as_array().map_or(0, Vec::len);
        let next = page["servers_links"].as_array().and_then(|l| l.iter().find(|l| l["rel"] == "next").cloned());
        if let Some(href) = next.as_ref().and_then(|n| n["href"].as_str()) {
            path = Some(href.strip_prefix(client.base()).context("a next link to this cloud")?.to_string());
        }
    }
    took.sort();
    Ok(ListRow { what: what.into(), took, servers })
}

/// Boots `n` servers in the caller's project, 100 per request and a few requests at a time, until all are
/// ACTIVE, saying how far it got every few seconds.
async fn boot_fixture(cloud: &Cloud, auth: &identity::AuthContext, image: String, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let requests = n.div_ceil(100);
    let (app, auth) = (cloud.app.clone(), Arc::new(auth.clone()));
    let booting = tokio::spawn(run_concurrently(requests, 8, move |chunk| {
        let (app, auth, image) = (app.clone(), auth.clone(), image.clone());
        async move {
            let new = NewServers {
                name: format!("{}-{chunk}", if chunk % 2 == 0 { "even" } else { "odd" }),
                image,
                flavor: "1".into(),
                networks: Default::default(),
                count: 100.min(n - chunk * 100) as u32,
                key_name: None,
                security_groups: Vec::new(),
                user_data: None,
                metadata: Default::default(),
                description: None,
                nic_tags: Vec::new(),
            };
            servers::create(&app, &Trace::none(), &auth, new).await?;
            Ok(())
        }
    }));
    let deadline = Instant::now() + PATIENCE.max(Duration::from_secs(n as u64 / 100));
    let mut said = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counts = servers::count_by_status(&cloud.app)?;
        let (active, errors) = (counts.get("ACTIVE").copied().unwrap_or(0), counts.get("ERROR").copied().unwrap_or(0));
        if errors > 0 {
            bail!("{errors} of the servers went to ERROR");
        }
        if active as usize >= n {
            booting.await??;
            println!("{n} servers ACTIVE in {:.1} s", started.elapsed().as_secs_f64());
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {active} of {n} servers are ACTIVE after {:?}", started.elapsed());
        }
        if said.elapsed() > Duration::from_secs(5) {
            println!("  … {active} of {n} ACTIVE after {:.0} s", started.elapsed().as_secs_f64());
            said = Instant::now();
        }
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    // A /14 has room for 260,000 instances.
    let (cloud, _dir, start_up) = boot_cloud_on(args.fake_hosts, "bench-list", "10.0.0.0/14").await?;
    println!("{} fake hosts up in {:.2} s", args.fake_hosts, start_up.as_secs_f64());
    let admin = Client::login(&cloud.url, "admin", "bench", "admin").await?;
    let (_, auth) =
        identity::password_login(&cloud.app, "admin", "bench", "admin", std::net::Ipv4Addr::LOCALHOST.into()).await?;
    let unlimited = json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1, "fixed_ips": -1}});
    admin
        .send(reqwest::Method::PUT, &format!("/compute/v2.1/os-quota-sets/{}", auth.project), Some(&unlimited))
        .await?;
    let image = admin.get("/image/v2/images").await?["images"][0]["id"].as_str().context("an image")?.to_string();
    println!("booting {} servers …", args.instances);
    boot_fixture(&cloud, &auth, image, args.instances).await?;
    let rss = rss_mib();
    println!("resident memory with {} hosts and {} ACTIVE instances: {rss:.0} MiB", args.fake_hosts, args.instances);

    let (limit, samples) = (args.page, args.samples);
    let detail = format!("/compute/v2.1/servers/detail?limit={limit}");
    let mut rows = Vec::new();
    println!();
    println!(
        "{:<44}  {:>8}  {:>9}  {:>9}  {:>9}  {:>9}",
        "list", "requests", "p50 (ms)", "p99 (ms)", "max (ms)", "servers"
    );
    for (what, path) in [
        (format!("detail, limit {limit}"), detail.clone()),
        (format!("brief, limit {limit}"), format!("/compute/v2.1/servers?limit={limit}")),
        (format!("detail, limit {limit}, status=ACTIVE"), format!("{detail}&status=ACTIVE")),
        (format!("detail, limit {limit}, name=odd (half match)"), format!("{detail}&name=odd")),
        (format!("detail, limit {limit}, all projects"), format!("{detail}&all_tenants=1")),
    ] {
        let row = time_list(&admin, &what, &path, samples).await?;
        row.print();
        rows.push(row);
    }
    let row = time_paging(&admin, &format!("detail, limit {limit}, every page to the end"), &detail).await?;
    row.print();
    if row.servers != args.instances {
        bail!("paging to the end listed {} servers of {}", row.servers, args.instances);
    }
    rows.push(row);
    cloud.shutdown().await;
    if args.json {
        let rows: Vec<_> = rows.iter().map(ListRow::json).collect();
        println!(
            "{}",
            json!({"instances": args.instances, "hosts": args.fake_hosts, "page": limit, "rss_mib": rss, "rows": rows})
        );
    }
    Ok(())
}
