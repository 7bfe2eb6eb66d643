//! Benchmarks. `nimbus bench boot` boots servers through the API as fast as it can and reports throughput
//! and time-to-ACTIVE percentiles, against an in-process cloud (the default) or a running one (`--url`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nimbus_actors::compute::virt::Capacity;
use nimbus_actors::{Cloud, CloudConfig};
use nimbus_runtime::Namespace;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::cli::ApiArgs;
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Boot servers concurrently until ACTIVE, then delete them.
    Boot(BootArgs),
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
    /// Benchmark a running cloud instead of an in-process one (with --password etc.).
    #[arg(long)]
    pub against: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Boot(args) => boot(args).await,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn boot(args: BootArgs) -> anyhow::Result<()> {
    let (client, cloud, _dir) = if args.against {
        (args.api.login().await?, None, None)
    } else {
        let dir = tempfile::tempdir().context("a temporary data directory")?;
        let mut config = CloudConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse().expect("an address");
        config.fake_hosts = args.fake_hosts;
        // Room for the whole run on the fake hosts.
        config.fake_capacity = Capacity { vcpus: 4096, ram_mb: 4 << 20, disk_gb: 1 << 20 };
        config.admin_password = Some("bench".into());
        config.fixed_range = "10.0.0.0/16".parse().expect("a valid CIDR");
        config.namespace = Namespace::new("bench");
        let cloud = Cloud::start(config).await?;
        let client = Client::login(&cloud.url, "admin", "bench", "admin").await?;
        (client, Some(cloud), Some(dir))
    };
    let images = client.get("/image/v2/images").await?;
    let image = images["images"][0]["id"].as_str().context("the cloud has no image")?.to_string();
    println!("booting {} servers (m1.tiny), {} at a time, on {}", args.servers, args.concurrency, client.base());

    let gate = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.servers);
    for n in 0..args.servers {
        let (client, image, gate) = (client.clone(), image.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let t0 = Instant::now();
            let body = json!({"server": {"name": format!("bench-{n}"), "imageRef": image, "flavorRef": "1"}});
            let created = client.post("/compute/v2.1/servers", &body).await?;
            let accepted = t0.elapsed();
            let id = created["server"]["id"].as_str().context("no server id")?.to_string();
            loop {
                let server = client.get(&format!("/compute/v2.1/servers/{id}")).await?;
                match server["server"]["status"].as_str() {
                    Some("ACTIVE") => break,
                    Some("ERROR") => bail!("server {id} went to ERROR: {}", server["server"]["fault"]["message"]),
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            Ok::<_, anyhow::Error>((id, accepted, t0.elapsed()))
        }));
    }
    let mut ids = Vec::new();
    let (mut accepted, mut active) = (Vec::new(), Vec::new());
    for task in tasks {
        let (id, a, t) = task.await??;
        ids.push(id);
        accepted.push(a);
        active.push(t);
    }
    let boot_time = started.elapsed();
    accepted.sort();
    active.sort();

    let deleting = Instant::now();
    for id in &ids {
        client.delete(&format!("/compute/v2.1/servers/{id}")).await?;
    }
    loop {
        let listed = client.get("/compute/v2.1/servers").await?;
        if listed["servers"].as_array().is_some_and(|s| s.iter().all(|s| !ids.iter().any(|id| s["id"] == **id))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delete_time = deleting.elapsed();

    let n = args.servers as f64;
    println!(
        "boot:   {:>8.1} servers/s  ({} servers in {:.2} s)",
        n / boot_time.as_secs_f64(),
        args.servers,
        boot_time.as_secs_f64()
    );
    println!(
        "        accepted (202) p50 {:.1} ms  p99 {:.1} ms",
        percentile(&accepted, 50.0).as_secs_f64() * 1e3,
        percentile(&accepted, 99.0).as_secs_f64() * 1e3
    );
    println!(
        "        to ACTIVE      p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
        percentile(&active, 50.0).as_secs_f64() * 1e3,
        percentile(&active, 95.0).as_secs_f64() * 1e3,
        percentile(&active, 99.0).as_secs_f64() * 1e3
    );
    println!(
        "delete: {:>8.1} servers/s  (all gone in {:.2} s)",
        n / delete_time.as_secs_f64(),
        delete_time.as_secs_f64()
    );
    if let Some(cloud) = cloud {
        let stats = cloud.ctx.store.stats();
        println!(
            "store:  {} durable commits for {} writes ({:.1} writes per commit)",
            stats.commits,
            stats.writes,
            stats.writes as f64 / stats.commits.max(1) as f64
        );
        cloud.shutdown().await;
    }
    Ok(())
}
