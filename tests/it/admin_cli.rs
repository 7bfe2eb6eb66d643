//! The operator's commands: `nimbus project create`, `nimbus user create`, the listings.

use std::process::Command;
use std::time::Duration;

use nimbus::client::Client;
use nimbus_tests::process::nimbus_binary;
use nimbus_tests::*;
use serde_json::json;

/// Runs the binary against `t`; call it inside `block_in_place`, the cloud runs on this test's runtime.
fn nimbus(t: &TestCloud, args: &[&str]) -> String {
    let output = Command::new(nimbus_binary())
        .args(args)
        .args(["--url", t.url(), "--password", ADMIN_PASSWORD])
        .output()
        .expect("running nimbus");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "nimbus {args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_a_project_and_a_member_who_can_log_in() {
    let t = TestCloud::start().await;
    let created = tokio::task::block_in_place(|| nimbus(&t, &["project", "create", "demo", "--description", "a demo"]));
    assert!(created.starts_with("created project demo ("), "{created}");
    let user = tokio::task::block_in_place(|| {
        nimbus(&t, &["user", "create", "alice", "--user-password", "s3cret", "--project", "demo", "--role", "member"])
    });
    assert!(user.contains("granted member on demo to alice"), "{user}");
    let users = tokio::task::block_in_place(|| nimbus(&t, &["user", "list"]));
    assert!(users.lines().any(|l| l.contains("alice")), "{users}");
    let projects = tokio::task::block_in_place(|| nimbus(&t, &["project", "list"]));
    assert!(projects.lines().any(|l| l.contains("demo") && l.contains("a demo")), "{projects}");

    let alice = Client::login(t.url(), "alice", "s3cret", "demo").await.expect("alice logs in to demo");
    let id = create_server(&alice, "alice-1").await;
    wait_for_status(&alice, &id, "ACTIVE").await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_admin_password_is_a_clear_error() {
    let t = TestCloud::start().await;
    let output = tokio::task::block_in_place(|| {
        Command::new(nimbus_binary())
            .args(["project", "list", "--url", t.url(), "--password", "wrong"])
            .output()
            .expect("running nimbus")
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401") && stderr.contains("requires authentication"), "{stderr}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_networks_pools_and_reservations() {
    let t = TestCloud::start().await;
    let created = tokio::task::block_in_place(|| {
        nimbus(
            &t,
            &[
                "network",
                "create",
                "tenants",
                "--fixed-range-v4",
                "10.20.0.0/22",
                "--mode",
                "vlan",
                "--num-networks",
                "4",
                "--network-size",
                "256",
                "--vlan-start",
                "500",
            ],
        )
    });
    assert_eq!(created.lines().filter(|l| l.contains("tenants_")).count(), 4, "{created}");
    assert!(created.contains("br-vlan500") && created.contains("br-vlan503"), "{created}");
    let listed = tokio::task::block_in_place(|| nimbus(&t, &["network", "list"]));
    assert!(listed.contains("private") && listed.contains("tenants_3"), "{listed}");
    let pool = tokio::task::block_in_place(|| {
        nimbus(&t, &["floating", "create", "--ip-range", "198.18.0.0/28", "--pool", "lab", "--interface", "veth-pub"])
    });
    assert_eq!(pool.trim(), "created floating pool lab (198.18.0.0/28 on veth-pub)");
    let reserved = tokio::task::block_in_place(|| nimbus(&t, &["fixed", "reserve", "10.20.0.3"]));
    assert_eq!(reserved.trim(), "reserved 10.20.0.3");
    tokio::task::block_in_place(|| {
        nimbus(&t, &["project", "create", "vlanproj", "--network-mode", "vlan"]);
        nimbus(&t, &["user", "create", "vic", "--user-password", "pw", "--project", "vlanproj", "--role", "member"]);
    });
    let vic = Client::login(t.url(), "vic", "pw", "vlanproj").await.unwrap();
    let id = create_server(&vic, "on-a-vlan").await;
    let server = wait_for_status(&vic, &id, "ACTIVE").await;
    assert_eq!(fixed_addresses(&server), vec!["10.20.0.4".to_string()], "the reserved .3 is skipped");
    let (status, stderr) = {
        let output = tokio::task::block_in_place(|| {
            Command::new(nimbus_binary())
                .args(["network", "create", "clash", "--fixed-range-v4", "10.20.1.0/24"])
                .args(["--url", t.url(), "--password", ADMIN_PASSWORD])
                .output()
                .unwrap()
        });
        (output.status, String::from_utf8_lossy(&output.stderr).to_string())
    };
    assert!(!status.success(), "an overlapping range is refused");
    assert!(stderr.contains("409") && stderr.contains("overlaps network tenants_1"), "{stderr}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_commands_list_the_tree_and_kill_actors_that_come_back_at_once() {
    let t = TestCloud::start().await;
    // A server of a VLAN project makes its project a conductor and a VLAN reconciler.
    let vlans = json!({"network": {"label": "tenants", "cidr": "10.2.0.0/24", "mode": "vlan", "vlan_start": 700}});
    t.admin.post("/compute/v2.1/os-networks", &vlans).await.unwrap();
    let member = t.user_in_mode("vlan", "member").await;
    let vm = create_server(&member, "makes-a-conductor").await;
    wait_for_status(&member, &vm, "ACTIVE").await;
    let listed = tokio::task::block_in_place(|| nimbus(&t, &["actors", "ls", "--json"]));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let mut names = Vec::new();
    fn walk(node: &serde_json::Value, names: &mut Vec<String>) {
        names.push(node["name"].as_str().unwrap().to_string());
        for child in node["children"].as_array().into_iter().flatten() {
            walk(child, names);
        }
    }
    walk(&listed["tree"], &mut names);
    for expected in ["cloud", "scheduler", "network", "vlans", "compute", "compute/host-0001", "projects", "gateway"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("conductor/")) && names.iter().any(|n| n.starts_with("vlan/")),
        "{names:?}"
    );

    // Reconcilers report how they are doing, in the JSON and in the table.
    let network = listed["tree"]["children"].as_array().unwrap().iter().find(|c| c["name"] == "network").unwrap();
    assert!(network["reconcilers"]["dataplane"]["runs"].as_u64().unwrap() >= 1, "{network}");
    let table = tokio::task::block_in_place(|| nimbus(&t, &["actors", "ls"]));
    assert!(table.lines().any(|l| l.trim_start().starts_with("↳ dataplane: ") && l.contains(" run")), "{table}");
    assert!(table.lines().any(|l| l.trim_start().starts_with("↳ sweep: ")), "the conductor's sweep: {table}");

    let scheduler = t.cloud.app.ns().actor_name("scheduler");
    let old = ractor::registry::where_is(scheduler.clone()).unwrap().get_id();
    let out = tokio::task::block_in_place(|| nimbus(&t, &["actors", "kill", "scheduler"]));
    assert_eq!(out.trim(), "killed scheduler");
    // How fast the restart is shows in the event timestamps (see `actors events`), not in this test's timing.
    wait_until("a new scheduler", Duration::from_secs(5), || async {
        ractor::registry::where_is(scheduler.clone())
            .is_some_and(|c| c.get_id() != old && c.get_status() == ractor::ActorStatus::Running)
    })
    .await;
    let id = create_server(&t.admin, "after-the-kill").await;
    wait_for_status(&t.admin, &id, "ACTIVE").await;
    let events = tokio::task::block_in_place(|| nimbus(&t, &["actors", "events"]));
    assert!(
        events.lines().any(|l| l.contains("Failed") && l.contains("scheduler") && l.contains("killed")),
        "{events}"
    );
    assert!(events.lines().any(|l| l.contains("Restarted") && l.contains("scheduler")), "{events}");
    let (status, _) = t
        .admin
        .raw(reqwest::Method::POST, "/admin/actors/kill", Some(&serde_json::json!({"name": "nobody"})))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 404);
    for (verb, name, reason) in [
        ("kill", "cloud", "supervision root"),
        ("stop", "cloud", "supervision root"),
        ("kill", "store", "not an actor"),
    ] {
        let (status, body) = t
            .admin
            .raw(reqwest::Method::POST, &format!("/admin/actors/{verb}"), Some(&serde_json::json!({"name": name})))
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 409, "{verb} {name}: {body}");
        assert!(body.to_string().contains(reason), "{verb} {name}: {body}");
    }
    let (status, _) = t.admin.raw(reqwest::Method::GET, "/admin/actors", None).await.unwrap();
    assert_eq!(status.as_u16(), 200, "the cloud still answers");
    let member = t.user_with_role("member").await;
    let (status, _) = member.raw(reqwest::Method::GET, "/admin/actors", None).await.unwrap();
    assert_eq!(status.as_u16(), 403);
    t.shutdown().await;
}
