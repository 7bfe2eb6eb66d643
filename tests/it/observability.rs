//! Observability: one request id, grepped in the log of `nimbus up`, shows the request's whole path (gateway,
//! conductor, scheduler, network manager, compute agent); `GET /metrics` is a valid Prometheus exposition
//! that counts what happened; reconcilers report how they are doing.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use nimbus::client::Client;
use nimbus_tests::process::{NimbusProcess, free_port};
use nimbus_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn one_request_id_shows_the_whole_path_of_a_boot_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> =
        ["up", "--data-dir", &data.display().to_string(), "--listen", &listen].iter().map(|a| a.to_string()).collect();
    // The binary's default log filter: what an operator sees.
    let env = [("NIMBUS_ADMIN_PASSWORD", "pw"), ("RUST_LOG", nimbus::DEFAULT_LOG_FILTER)];
    let nimbus = NimbusProcess::spawn(&data, &args, &env, &listen);
    let admin = Client::login(&nimbus.url, "admin", "pw", "admin").await.unwrap();
    let image = default_image(&admin).await;
    let created = reqwest::Client::new()
        .post(format!("{}/compute/v2.1/servers", nimbus.url))
        .header("x-auth-token", admin.token())
        .json(&json!({"server": {"name": "traced", "imageRef": image, "flavorRef": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let request_id = created.headers()["x-openstack-request-id"].to_str().unwrap().to_string();
    let id = created.json::<serde_json::Value>().await.unwrap()["server"]["id"].as_str().unwrap().to_string();
    wait_for_status(&admin, &id, "ACTIVE").await;

    // Every part of the path logs within a span carrying the id (the agent's line may follow its answer).
    let parts = [
        ("the gateway", "nimbus_actors::gateway"),
        ("the application layer", "nimbus_actors::app::servers"),
        ("the conductor", "nimbus_actors::conductor"),
        ("the scheduler", "nimbus_actors::scheduler"),
        ("the network manager", "nimbus_actors::network"),
        ("the compute agent", "nimbus_actors::compute"),
    ];
    let lines =
        |log: &str| -> Vec<String> { log.lines().filter(|l| l.contains(&request_id)).map(str::to_string).collect() };
    wait_until("every part of the path to log the request", Duration::from_secs(10), || {
        let found = lines(&nimbus.log_text());
        let all = parts.iter().all(|(_, module)| found.iter().any(|l| l.contains(module)));
        async move { all }
    })
    .await;
    let found = lines(&nimbus.log_text());
    assert!(found.iter().any(|l| l.contains("answered status=202")), "{found:#?}");
    assert!(found.iter().any(|l| l.contains("placed host=host-")), "{found:#?}");
    assert!(found.iter().any(|l| l.contains("instance spawned")), "{found:#?}");
    for (part, module) in parts {
        assert!(found.iter().any(|l| l.contains(module)), "no line of {part} carries {request_id}: {found:#?}");
    }
    assert!(!nimbus.log_text().contains('\u{1b}'), "a log file gets no terminal colours");
    drop(nimbus);
}

/// `promtool check metrics` on the exposition (skipped where promtool is not installed, outside CI).
fn promtool(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let why = format!("promtool is not installed (Debian package prometheus): {e}");
            return nimbus_actors::kernel::skip_unless_ci("the promtool check", &why);
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool refused the metrics: {}", String::from_utf8_lossy(&out.stderr));
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_creates_commits_restarts_and_instances() {
    let t = TestCloud::start_with(Options { metrics: true, ..Options::default() }).await;
    let member = t.user_with_role("member").await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(create_server(&member, &format!("m{n}")).await);
    }
    for id in &ids {
        wait_for_status(&member, id, "ACTIVE").await;
    }
    t.kill_and_wait_for_restart("scheduler").await;
    let url = format!("http://{}/metrics", t.cloud.metrics_addr.unwrap());
    let scrape = || async { reqwest::get(&url).await.unwrap().text().await.unwrap() };
    // The network manager's first reconcile pass runs on a timer: wait until it is counted.
    wait_until("a reconcile pass to be counted", Duration::from_secs(5), || async {
        sample(&scrape().await, "nimbus_reconcile_runs_total", &[r#"actor="network""#, r#"reconciler="dataplane""#])
            .is_some_and(|runs| runs >= 1.0)
    })
    .await;
    let text = scrape().await;
    let creates = [r#"route="/compute/v2.1/servers""#, r#"method="POST""#, r#"status="202""#];
    assert_eq!(sample(&text, "nimbus_http_requests_total", &creates), Some(10.0), "{text}");
    assert_eq!(sample(&text, "nimbus_http_request_duration_seconds_count", &creates), Some(10.0), "{text}");
    assert!(sample(&text, "nimbus_store_commits_total", &[]).is_some_and(|c| c >= 10.0), "{text}");
    assert!(sample(&text, "nimbus_store_writes_per_commit_count", &[]).is_some_and(|c| c >= 10.0), "{text}");
    assert_eq!(sample(&text, "nimbus_actor_restarts_total", &[r#"actor="scheduler""#]), Some(1.0), "{text}");
    assert_eq!(sample(&text, "nimbus_instances", &[r#"status="ACTIVE""#]), Some(10.0), "{text}");
    assert!(!text.contains(&t.cloud.app.ns().actor_name("scheduler")), "actor labels are the cloud's own names");
    promtool(&text);
    t.shutdown().await;
}
