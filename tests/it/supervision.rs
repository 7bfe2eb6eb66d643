//! Killing actors: each comes back under its supervisor, rebuilds from the store, and work goes on.

use std::time::Duration;

use nimbus_tests::*;

fn kill(t: &TestCloud, local_name: &str) {
    let name = t.cloud.app.ns().actor_name(local_name);
    ractor::registry::where_is(name.clone()).unwrap_or_else(|| panic!("{name} is running")).kill();
}

#[tokio::test]
async fn killed_workers_come_back_and_boots_keep_succeeding() {
    let t = TestCloud::start().await;
    let mut client = t.admin.clone();
    for actor in ["scheduler", "network", "compute/host-0001", "gateway", "projects"] {
        t.kill_and_wait_for_restart(actor).await;
        if actor == "gateway" {
            // The killed gateway's connections died with it; a client reconnects, as real ones do.
            client = nimbus::client::Client::login(t.url(), "admin", ADMIN_PASSWORD, "admin").await.unwrap();
        }
        let id = create_server(&client, &format!("after-{}", actor.replace('/', "-"))).await;
        wait_for_status(&client, &id, "ACTIVE").await;
    }
    let report = nimbus_runtime::supervisor::children(t.cloud.root(), Duration::from_secs(1)).await.unwrap();
    let restarts: Vec<(String, u32)> = report.iter().map(|c| (c.name.clone(), c.restarts)).collect();
    assert!(restarts.iter().any(|(n, r)| n.ends_with("scheduler") && *r == 1), "{restarts:?}");
    assert!(restarts.iter().any(|(n, r)| n.ends_with("gateway") && *r == 1), "{restarts:?}");
    t.shutdown().await;
}

#[tokio::test]
async fn builds_and_deletes_in_flight_survive_killed_conductors_and_agents() {
    let t = TestCloud::start().await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(create_server(&t.admin, &format!("chaos-{n}")).await);
    }
    let project = server(&t.admin, &ids[0]).await.unwrap()["tenant_id"].as_str().unwrap().to_string();
    kill(&t, &format!("conductor/{project}"));
    kill(&t, "compute/host-0002");
    for id in &ids {
        wait_for_status(&t.admin, id, "ACTIVE").await;
    }
    for id in &ids[..4] {
        t.admin.delete(&format!("/compute/v2.1/servers/{id}")).await.unwrap();
    }
    kill(&t, &format!("conductor/{project}"));
    kill(&t, "network");
    for id in &ids[..4] {
        wait_for_gone(&t.admin, id).await;
    }
    wait_until("no pending operations", Duration::from_secs(10), || async {
        store_violations(&t.cloud.store).is_empty()
    })
    .await;
    let running: usize = t.cloud.hypervisors.values().map(|h| h.running().len()).sum();
    assert_eq!(running, 4, "exactly the four remaining instances run");
    t.shutdown().await;
}

#[tokio::test]
async fn a_child_that_keeps_crashing_escalates_to_its_supervisor() {
    let t = TestCloud::start_with(Options { hosts: 1, ..Options::default() }).await;
    // Kill the agent faster than the compute supervisor's intensity (10 restarts in 10 s) allows.
    for _ in 0..10 {
        t.kill_and_wait_for_restart("compute/host-0001").await;
    }
    // The eleventh: the compute supervisor gives up; the cloud supervisor restarts it, and with it the agent.
    t.kill_and_wait_for_restart("compute/host-0001").await;
    let report = nimbus_runtime::supervisor::children(t.cloud.root(), Duration::from_secs(1)).await.unwrap();
    let compute = report.iter().find(|c| c.name.ends_with("compute")).unwrap();
    assert_eq!(compute.restarts, 1, "{report:?}");
    assert!(compute.last_error.as_ref().is_some_and(|(_, e)| e.contains("restarts")), "{compute:?}");
    let id = create_server(&t.admin, "after-escalation").await;
    wait_for_status(&t.admin, &id, "ACTIVE").await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_host_destroys_what_the_cloud_does_not_place_there_at_its_next_report() {
    use nimbus_actors::compute::virt::VirtDriver;
    let t = TestCloud::start().await;
    let id = create_server(&t.admin, "placed").await;
    wait_for_status(&t.admin, &id, "ACTIVE").await;
    let (host, hypervisor) = t.cloud.hypervisors.iter().find(|(_, h)| !h.running().is_empty()).unwrap();
    // What a cleanup that failed leaves: an instance the host runs and the store does not know of.
    let mut leftover = hypervisor.running()[0].clone();
    leftover.id = nimbus_protocol::ids::InstanceId::generate();
    hypervisor.spawn(leftover.clone()).await.unwrap();
    wait_until(&format!("{host} to destroy the leftover"), Duration::from_secs(10), || async {
        hypervisor.running().iter().all(|s| s.id != leftover.id)
    })
    .await;
    let running: Vec<String> = hypervisor.running().iter().map(|s| s.id.to_string()).collect();
    assert_eq!(running, vec![id], "the placed instance still runs");
    t.shutdown().await;
}

#[tokio::test]
async fn the_cloud_is_up_only_once_every_host_has_made_its_first_report() {
    // Agents start in a few milliseconds and report concurrently; the conductors and the API start after
    // the agents' supervisor, which waits for the reports, so a resumed build never meets an empty host list.
    const HOSTS: u32 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let config = TestCloud::config(&dir.path().join("data"), &Options { hosts: HOSTS, ..Options::default() });
    let cloud = nimbus_actors::cloud::Cloud::start(config).await.unwrap();
    let registered = nimbus_actors::app::hosts::usage(&cloud.app).unwrap();
    let up = registered.iter().filter(|u| nimbus_actors::app::hosts::is_up(&u.host, cloud.app.timing())).count();
    assert_eq!((registered.len(), up), (HOSTS as usize, HOSTS as usize), "every host is registered and up");
    cloud.shutdown().await;
}
