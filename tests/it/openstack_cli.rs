//! The stock `openstack` CLI against nimbus: the commands a new user runs first.

use nimbus_tests::openstack;
use nimbus_tests::*;

#[tokio::test]
async fn the_stock_openstack_cli_drives_a_server_lifecycle() {
    let t = TestCloud::start().await;
    let clouds = t.dir.path().join("clouds.yaml");
    assert!(clouds.exists(), "the cloud wrote clouds.yaml");
    let run = |args: &'static [&'static str]| {
        let clouds = clouds.clone();
        tokio::task::spawn_blocking(move || openstack::run(&clouds, args))
    };
    let flavors = run(&["flavor", "list", "-f", "value", "-c", "Name"]).await.unwrap();
    assert_eq!(flavors.lines().collect::<Vec<_>>(), vec!["m1.tiny", "m1.small", "m1.medium", "m1.large"]);
    let images = run(&["image", "list", "-f", "value", "-c", "Name"]).await.unwrap();
    assert_eq!(images.trim(), "cirros-0.6.2-x86_64-disk");

    let created = run(&[
        "server",
        "create",
        "--image",
        "cirros-0.6.2-x86_64-disk",
        "--flavor",
        "m1.tiny",
        "--wait",
        "-f",
        "json",
        "vm1",
    ])
    .await
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let addresses = created["addresses"].to_string();
    assert!(addresses.contains("10.0.0."), "{addresses}");

    let listed = run(&["server", "list", "-f", "value", "-c", "Name", "-c", "Status"]).await.unwrap();
    assert_eq!(listed.trim(), "vm1 ACTIVE");
    let shown = run(&["server", "show", "vm1", "-f", "value", "-c", "status", "-c", "flavor"]).await.unwrap();
    assert!(shown.contains("ACTIVE") && shown.contains("m1.tiny"), "{shown}");
    let hypervisors =
        run(&["hypervisor", "list", "-f", "value", "-c", "Hypervisor Hostname", "-c", "State"]).await.unwrap();
    assert_eq!(hypervisors.lines().count(), 4, "{hypervisors}");
    assert!(hypervisors.lines().all(|l| l.ends_with(" up")), "{hypervisors}");
    let services = run(&["compute", "service", "list", "-f", "value", "-c", "Binary", "-c", "State"]).await.unwrap();
    assert!(services.lines().count() == 4 && services.lines().all(|l| l == "nova-compute up"), "{services}");

    run(&["server", "delete", "--wait", "vm1"]).await.unwrap();
    let listed = run(&["server", "list", "-f", "value"]).await.unwrap();
    assert_eq!(listed.trim(), "");
    t.shutdown().await;
}
