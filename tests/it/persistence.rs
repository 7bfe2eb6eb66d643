//! State survives restarts: graceful (SIGTERM) and abrupt (SIGKILL in the middle of a burst).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nimbus::client::Client;
use nimbus_storage::Store;
use nimbus_tests::process::NimbusProcess;
use nimbus_tests::*;
use serde_json::Value;

const PASSWORD: &str = "persist-secret";

async fn servers_by_id(client: &Client) -> BTreeMap<String, Value> {
    let listed = client.get("/compute/v2.1/servers/detail").await.unwrap();
    listed["servers"].as_array().unwrap().iter().map(|s| (s["id"].as_str().unwrap().to_string(), s.clone())).collect()
}

#[tokio::test]
async fn a_graceful_restart_keeps_servers_addresses_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let nimbus = NimbusProcess::start(&data, PASSWORD);
    let client = Client::login(&nimbus.url, "admin", PASSWORD, "admin").await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(create_server(&client, &format!("keep-{n}")).await);
    }
    for id in &ids {
        wait_for_status(&client, id, "ACTIVE").await;
    }
    let before = servers_by_id(&client).await;
    let status = nimbus.terminate();
    assert!(status.success(), "nimbus exits 0 on SIGTERM: {status}");

    let nimbus = NimbusProcess::start(&data, PASSWORD);
    let client = Client::login(&nimbus.url, "admin", PASSWORD, "admin").await.unwrap();
    let after = servers_by_id(&client).await;
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (id, was) in &before {
        let now = &after[id];
        for field in ["name", "status", "addresses", "OS-EXT-SRV-ATTR:host", "created"] {
            assert_eq!(was[field], now[field], "{field} of {id}");
        }
    }
    drop(nimbus);
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_burst_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let nimbus = NimbusProcess::start(&data, PASSWORD);
    let client = Client::login(&nimbus.url, "admin", PASSWORD, "admin").await.unwrap();
    // Some servers that exist before the burst, half of which the burst deletes.
    let mut old = Vec::new();
    for n in 0..6 {
        old.push(create_server(&client, &format!("old-{n}")).await);
    }
    for id in &old {
        wait_for_status(&client, id, "ACTIVE").await;
    }
    // The burst: creates and deletes at once, then SIGKILL while they are in flight.
    let image = default_image(&client).await;
    let mut accepted = Vec::new();
    let mut tasks = Vec::new();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for n in 0..30 {
        let (client, image, answered) = (client.clone(), image.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let body =
                serde_json::json!({"server": {"name": format!("burst-{n}"), "imageRef": image, "flavorRef": "1"}});
            let id = client
                .post("/compute/v2.1/servers", &body)
                .await
                .ok()
                .and_then(|v| v["server"]["id"].as_str().map(str::to_string));
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            id
        }));
    }
    for id in &old[..3] {
        client.delete(&format!("/compute/v2.1/servers/{id}")).await.unwrap();
    }
    // Killed while the burst is in flight: some creates answered, others not yet.
    wait_until("some creates of the burst to be answered", Duration::from_secs(30), || async {
        answered.load(std::sync::atomic::Ordering::SeqCst) >= 5
    })
    .await;
    nimbus.kill();
    for task in tasks {
        if let Some(id) = task.await.unwrap() {
            accepted.push(id);
        }
    }

    assert!(!accepted.is_empty(), "no create of the burst was accepted before the kill");

    let nimbus = NimbusProcess::start(&data, PASSWORD);
    let client = Client::login(&nimbus.url, "admin", PASSWORD, "admin").await.unwrap();
    wait_until("every operation to finish after the restart", Duration::from_secs(60), || async {
        servers_by_id(&client).await.values().all(|s| s["OS-EXT-STS:task_state"].is_null() && s["status"] != "BUILD")
    })
    .await;
    let servers = servers_by_id(&client).await;
    for id in &old[..3] {
        assert!(!servers.contains_key(id), "deleted server {id} is gone");
    }
    for id in &old[3..] {
        assert_eq!(servers[id]["status"], "ACTIVE", "untouched server {id} is still ACTIVE");
    }
    for id in &accepted {
        assert_eq!(servers.get(id).map(|s| s["status"].clone()), Some(Value::from("ACTIVE")), "accepted server {id}");
    }
    let addresses: Vec<String> = servers.values().flat_map(fixed_addresses).collect();
    let unique: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(addresses.len(), unique.len(), "no address is given twice: {addresses:?}");
    assert!(servers.values().all(|s| fixed_addresses(s).len() == 1), "every server has exactly one address");
    let status = nimbus.terminate();
    assert!(status.success());

    // With nimbus stopped, the file itself is consistent.
    let store = Store::open(data.join("nimbus.redb")).unwrap();
    let violations = store_violations(&store);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn a_data_file_from_a_newer_nimbus_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nimbus.redb");
    drop(Store::open(&path).unwrap());
    nimbus_storage::schema::force_schema_version(&path, nimbus_storage::schema::SCHEMA_VERSION + 1).unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    let (newer, supported) = (nimbus_storage::schema::SCHEMA_VERSION + 1, nimbus_storage::schema::SCHEMA_VERSION);
    assert!(err.contains(&format!("schema version {newer}")) && err.contains(&format!("up to {supported}")), "{err}");
}
