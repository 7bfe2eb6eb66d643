//! A multi-process cloud: a controller and compute nodes joined over ractor_cluster on loopback. Builds land
//! on remote hosts; a SIGKILLed compute node is marked down and avoided.

use std::time::Duration;

use nimbus::client::Client;
use nimbus_tests::process::{NimbusProcess, free_port};
use nimbus_tests::*;

const PASSWORD: &str = "cluster-secret";
const COOKIE: &str = "a-test-cookie-of-enough-length";

/// `--name NAME --tls-dir DIR` when the cluster uses TLS, else `--insecure-plaintext`.
fn tls_args(name: &str, tls: Option<&str>) -> Vec<String> {
    match tls {
        Some(dir) => vec!["--name".into(), name.into(), "--tls-dir".into(), dir.into()],
        None => vec!["--insecure-plaintext".into()],
    }
}

/// A controller keeping its data in `dir/data`; `log` names its log file (a restart gets a new one).
fn controller(dir: &std::path::Path, log: &str, cluster: u16, tls: Option<&str>) -> NimbusProcess {
    let api = format!("127.0.0.1:{}", free_port());
    let data = dir.join("data").display().to_string();
    let cluster_listen = format!("127.0.0.1:{cluster}");
    let mut args: Vec<String> = ["node", "--role", "controller", "--data-dir", data.as_str(), "--listen", api.as_str()]
        .map(String::from)
        .to_vec();
    args.extend(
        ["--cluster-listen", cluster_listen.as_str(), "--report-interval-ms", "200", "--service-down-after-ms", "3000"]
            .map(String::from),
    );
    args.extend(tls_args("controller", tls));
    let env = [("NIMBUS_COOKIE", COOKIE), ("NIMBUS_ADMIN_PASSWORD", PASSWORD)];
    NimbusProcess::spawn(&dir.join(log), &args, &env, &api)
}

fn compute(dir: &std::path::Path, host: &str, cluster: u16, tls: Option<&str>) -> NimbusProcess {
    let own = format!("127.0.0.1:{}", free_port());
    let join = format!("127.0.0.1:{cluster}");
    let data = dir.join(format!("{host}-data")).display().to_string();
    let mut args: Vec<String> =
        ["node", "--role", "compute", "--host", host, "--join", join.as_str()].map(String::from).to_vec();
    args.extend(
        ["--data-dir", data.as_str(), "--cluster-listen", own.as_str(), "--report-interval-ms", "200"]
            .map(String::from),
    );
    args.extend(tls_args(host, tls));
    NimbusProcess::spawn(&dir.join(host), &args, &[("NIMBUS_COOKIE", COOKIE)], &own)
}

async fn hosts_up(admin: &Client) -> Vec<String> {
    let listed = admin.get("/compute/v2.1/os-hypervisors").await.unwrap();
    listed["hypervisors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["state"] == "up")
        .map(|h| h["hypervisor_hostname"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn builds_land_on_remote_hosts_and_a_dead_host_is_avoided() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = free_port();
    let ctl = controller(dir.path(), "controller", cluster, None);
    let nodes = [
        compute(dir.path(), "remote-1", cluster, None),
        compute(dir.path(), "remote-2", cluster, None),
        compute(dir.path(), "remote-3", cluster, None),
    ];
    let admin = Client::login(&ctl.url, "admin", PASSWORD, "admin").await.unwrap();
    wait_until("the three remote hosts to report", Duration::from_secs(30), || async {
        hosts_up(&admin).await.len() == 3
    })
    .await;

    let image = default_image(&admin).await;
    let burst = serde_json::json!({"server": {"name": "r", "imageRef": image, "flavorRef": "1", "min_count": 30, "max_count": 30}});
    admin.post("/compute/v2.1/servers", &burst).await.unwrap();
    wait_until("30 ACTIVE servers", Duration::from_secs(60), || async {
        let listed = admin.get("/compute/v2.1/servers/detail").await.unwrap();
        let servers = listed["servers"].as_array().unwrap().clone();
        servers.len() == 30 && servers.iter().all(|s| s["status"] == "ACTIVE")
    })
    .await;
    let listed = admin.get("/compute/v2.1/servers/detail").await.unwrap();
    let mut per_host = std::collections::BTreeMap::new();
    for s in listed["servers"].as_array().unwrap() {
        *per_host.entry(s["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        per_host.values().copied().collect::<Vec<i32>>(),
        vec![10, 10, 10],
        "spread over all three: {per_host:?}"
    );

    let [first, second, third] = nodes;
    let killed_at = std::time::Instant::now();
    third.kill();
    wait_until("remote-3 to be marked down", Duration::from_secs(20), || async {
        !hosts_up(&admin).await.contains(&"remote-3".to_string())
    })
    .await;
    let marked_down_after = killed_at.elapsed();
    // Configured: 3 s without a report. The margin is for a loaded 2-core machine running the whole suite.
    assert!(marked_down_after < Duration::from_secs(10), "down after {marked_down_after:?}");
    for n in 0..4 {
        let id = create_server(&admin, &format!("after-{n}")).await;
        let s = wait_for_status(&admin, &id, "ACTIVE").await;
        assert_ne!(s["OS-EXT-SRV-ATTR:host"], "remote-3", "new builds avoid the dead host");
    }
    let services = admin.get("/compute/v2.1/os-services").await.unwrap();
    let down: Vec<&str> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "down")
        .map(|s| s["host"].as_str().unwrap())
        .collect();
    assert!(down.contains(&"remote-3"), "{services}");
    // Its instances are reported, not silently lost.
    let status = admin.get("/admin/cluster").await.unwrap();
    assert!(status["warnings"].to_string().contains("10 instance(s) on remote-3, which is down"), "{status}");

    // remote-3 comes back: it rejoins, and its agent reconciles (the fake hypervisor lost its instances with
    // the process; the ones the cloud places there run again).
    let third = compute(dir.path(), "remote-3", cluster, None);
    wait_until("remote-3 to be up again", Duration::from_secs(15), || async { hosts_up(&admin).await.len() == 3 })
        .await;
    assert_eq!(admin.get("/admin/cluster").await.unwrap()["warnings"], serde_json::json!([]));

    // The controller restarts: the compute nodes join it again, and nothing is lost or duplicated.
    let before = admin.get("/compute/v2.1/servers/detail").await.unwrap()["servers"].as_array().unwrap().len();
    assert!(ctl.terminate().success());
    let ctl = controller(dir.path(), "controller2", cluster, None);
    let admin = Client::login(&ctl.url, "admin", PASSWORD, "admin").await.unwrap();
    wait_until("all hosts to rejoin the restarted controller", Duration::from_secs(30), || async {
        hosts_up(&admin).await.len() == 3
    })
    .await;
    let hypervisors = admin.get("/compute/v2.1/os-hypervisors").await.unwrap();
    assert_eq!(hypervisors["hypervisors"].as_array().unwrap().len(), 3, "no host appears twice");
    assert_eq!(admin.get("/compute/v2.1/servers/detail").await.unwrap()["servers"].as_array().unwrap().len(), before);
    let id = create_server(&admin, "after-controller-restart").await;
    wait_for_status(&admin, &id, "ACTIVE").await;
    drop((first, second, third, ctl));
}

#[tokio::test]
async fn a_node_with_a_wrong_cookie_is_refused_and_nothing_of_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = free_port();
    let ctl = controller(dir.path(), "controller", cluster, None);
    let own = format!("127.0.0.1:{}", free_port());
    let intruder_data = dir.path().join("intruder-data");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(nimbus_tests::process::nimbus_binary())
            .args(["node", "--role", "compute", "--host", "intruder", "--join", &format!("127.0.0.1:{cluster}")])
            .args(["--cluster-listen", &own, "--insecure-plaintext", "--data-dir"])
            .arg(&intruder_data)
            .env("NIMBUS_COOKIE", "not-the-cluster-cookie-at-all")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success(), "the intruder gives up");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not join the controller") && stderr.contains("cookie is probably wrong"),
        "{stderr}"
    );
    assert!(ctl.log_text().contains("auth_fail"), "the controller logs the refused session");
    let admin = Client::login(&ctl.url, "admin", PASSWORD, "admin").await.unwrap();
    let hypervisors = admin.get("/compute/v2.1/os-hypervisors").await.unwrap();
    assert!(hypervisors["hypervisors"].as_array().unwrap().is_empty(), "nothing of it joined: {hypervisors}");
}

#[tokio::test]
async fn nodes_with_certificates_of_the_cluster_talk_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = std::process::Command::new(nimbus_tests::process::nimbus_binary())
        .args(["cluster", "certs", "--dir"])
        .arg(&certs)
        .args(["--node", "controller", "--node", "tls-1"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let cluster = free_port();
    let tls = certs.display().to_string();
    let ctl = controller(dir.path(), "controller", cluster, Some(&tls));
    let node = compute(dir.path(), "tls-1", cluster, Some(&tls));
    let admin = Client::login(&ctl.url, "admin", PASSWORD, "admin").await.unwrap();
    wait_until("the TLS node to report", Duration::from_secs(30), || async {
        hosts_up(&admin).await == vec!["tls-1".to_string()]
    })
    .await;
    let id = create_server(&admin, "over-tls").await;
    assert_eq!(wait_for_status(&admin, &id, "ACTIVE").await["OS-EXT-SRV-ATTR:host"], "tls-1");

    // A node without the cluster's certificates cannot join, even with the right cookie.
    let plain = format!("127.0.0.1:{}", free_port());
    let plain_data = dir.path().join("plain-data");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(nimbus_tests::process::nimbus_binary())
            .args(["node", "--role", "compute", "--host", "plain-1", "--join", &format!("127.0.0.1:{cluster}")])
            .args(["--cluster-listen", &plain, "--insecure-plaintext", "--data-dir"])
            .arg(&plain_data)
            .env("NIMBUS_COOKIE", COOKIE)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("could not join the controller"), "refused at the join, not for another reason: {stderr}");
    assert_eq!(hosts_up(&admin).await, vec!["tls-1".to_string()], "nothing of the plain node joined");
    drop((node, ctl));
}

#[test]
fn a_node_without_certificates_is_refused_unless_plaintext_is_asked_for() {
    let output = std::process::Command::new(nimbus_tests::process::nimbus_binary())
        .args(["node", "--role", "compute", "--host", "h", "--join", "127.0.0.1:1", "--cluster-listen", "127.0.0.1:0"])
        .env("NIMBUS_COOKIE", COOKIE)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("encrypted by default") && stderr.contains("nimbus cluster certs"), "{stderr}");
}
