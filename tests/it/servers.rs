//! Servers end to end on an in-process cloud: build, placement, retries, isolation, delete.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nimbus_protocol::compute::Capacity;
use nimbus_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn a_server_builds_to_active_with_a_fixed_ip_and_is_deleted() {
    let t = TestCloud::start().await;
    let id = create_server(&t.admin, "vm1").await;
    let server = wait_for_status(&t.admin, &id, "ACTIVE").await;
    assert_eq!(server["OS-EXT-STS:vm_state"], "active");
    assert_eq!(server["OS-EXT-STS:power_state"], 1);
    assert_eq!(server["OS-EXT-STS:task_state"], serde_json::Value::Null);
    let host = server["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    assert!(
        t.cloud.hypervisors[&nimbus_protocol::ids::HostId(host.clone())]
            .running()
            .iter()
            .any(|s| s.id.to_string() == id)
    );
    assert_eq!(fixed_addresses(&server), vec!["10.0.0.2".to_string()], "first free address after the gateway");
    let mac = server["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"].as_str().unwrap();
    assert!(mac.starts_with("fa:16:3e:"), "{mac}");

    t.admin.delete(&format!("/compute/v2.1/servers/{id}")).await.unwrap();
    wait_for_gone(&t.admin, &id).await;
    assert!(t.cloud.hypervisors.values().all(|h| h.running().is_empty()), "the instance is destroyed on its host");
    // The address is free again.
    let again = create_server(&t.admin, "vm2").await;
    assert_eq!(fixed_addresses(&wait_for_status(&t.admin, &again, "ACTIVE").await), vec!["10.0.0.2".to_string()]);
    t.shutdown().await;
}

#[tokio::test]
async fn a_burst_spreads_over_hosts_and_never_shares_an_address() {
    let t = TestCloud::start().await;
    let image = default_image(&t.admin).await;
    let body =
        json!({"server": {"name": "burst", "imageRef": image, "flavorRef": "1", "min_count": 12, "max_count": 12}});
    t.admin.post("/compute/v2.1/servers", &body).await.unwrap();
    wait_until("12 ACTIVE servers", Duration::from_secs(30), || async {
        let listed = t.admin.get("/compute/v2.1/servers/detail").await.unwrap();
        let servers = listed["servers"].as_array().unwrap().clone();
        servers.len() == 12 && servers.iter().all(|s| s["status"] == "ACTIVE")
    })
    .await;
    let listed = t.admin.get("/compute/v2.1/servers/detail").await.unwrap();
    let servers = listed["servers"].as_array().unwrap().clone();
    let addresses: BTreeSet<String> = servers.iter().flat_map(fixed_addresses).collect();
    assert_eq!(addresses.len(), 12, "every server has its own address");
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for s in &servers {
        *per_host.entry(s["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_host.values().copied().collect::<Vec<_>>(), vec![3, 3, 3, 3], "RAM spreading: {per_host:?}");
    t.shutdown().await;
}

#[tokio::test]
async fn a_failed_build_is_retried_on_another_host() {
    let t = TestCloud::start_with(Options { hosts: 2, ..Options::default() }).await;
    // host-0001 is chosen first (ties go to the lower name); make it fail.
    t.cloud.hypervisors.values().next().unwrap().set_broken(true);
    let id = create_server(&t.admin, "retry").await;
    let server = wait_for_status(&t.admin, &id, "ACTIVE").await;
    assert_eq!(server["OS-EXT-SRV-ATTR:host"], "host-0002");
    assert_eq!(fixed_addresses(&server).len(), 1);
    t.shutdown().await;
}

#[tokio::test]
async fn a_build_that_fails_everywhere_ends_in_error_with_no_valid_host() {
    let t = TestCloud::start_with(Options { hosts: 4, ..Options::default() }).await;
    for h in t.cloud.hypervisors.values() {
        h.set_broken(true);
    }
    let id = create_server(&t.admin, "doomed").await;
    let server = wait_for_status(&t.admin, &id, "ERROR").await;
    let fault = server["fault"]["message"].as_str().unwrap();
    assert!(fault.starts_with("No valid host was found. Exceeded max scheduling attempts 3"), "{fault}");
    assert!(fixed_addresses(&server).is_empty(), "the address went back to the pool");
    assert_eq!(server["OS-EXT-SRV-ATTR:host"], serde_json::Value::Null);
    // An ERROR server can be deleted.
    t.admin.delete(&format!("/compute/v2.1/servers/{id}")).await.unwrap();
    wait_for_gone(&t.admin, &id).await;
    t.shutdown().await;
}

#[tokio::test]
async fn no_host_with_room_means_no_valid_host() {
    let small = Capacity { vcpus: 1, ram_mb: 256, disk_gb: 10 };
    let t = TestCloud::start_with(Options { hosts: 2, capacity: small, ..Options::default() }).await;
    let id = create_server(&t.admin, "too-big").await;
    let server = wait_for_status(&t.admin, &id, "ERROR").await;
    let fault = server["fault"]["message"].as_str().unwrap();
    assert_eq!(fault, "No valid host was found. Rejected 2 host(s): not enough RAM.");
    t.shutdown().await;
}

#[tokio::test]
async fn deleting_while_building_leaves_nothing_behind() {
    let t = TestCloud::start().await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(create_server(&t.admin, &format!("short-{n}")).await);
    }
    for id in &ids {
        t.admin.delete(&format!("/compute/v2.1/servers/{id}")).await.unwrap();
    }
    for id in &ids {
        wait_for_gone(&t.admin, id).await;
    }
    wait_until("hypervisors empty", Duration::from_secs(10), || async {
        t.cloud.hypervisors.values().all(|h| h.running().is_empty())
    })
    .await;
    let fixed = t.cloud.store.read(|r| nimbus_storage::Reads::scan(r, &nimbus_storage::schema::FIXED_IPS)).unwrap();
    assert!(fixed.is_empty(), "no fixed IP is left allocated: {fixed:?}");
    t.shutdown().await;
}

#[tokio::test]
async fn projects_see_only_their_own_servers_and_readers_cannot_change_them() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let bob = t.user_with_role("member").await;
    let a = create_server(&alice, "alice-vm").await;
    let b = create_server(&bob, "bob-vm").await;
    wait_for_status(&alice, &a, "ACTIVE").await;
    wait_for_status(&bob, &b, "ACTIVE").await;

    let listed = alice.get("/compute/v2.1/servers").await.unwrap();
    let names: Vec<&str> = listed["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["alice-vm"]);
    for (method, expected) in [(Method::GET, 404), (Method::DELETE, 404)] {
        let (status, body) = alice.raw(method.clone(), &format!("/compute/v2.1/servers/{b}"), None).await.unwrap();
        assert_eq!(status.as_u16(), expected, "{method} another project's server: {body}");
        assert_eq!(body["itemNotFound"]["code"], 404);
    }
    let (status, body) = alice.raw(Method::GET, "/compute/v2.1/servers?all_tenants=1", None).await.unwrap();
    assert_eq!(status.as_u16(), 403, "{body}");

    let all = t.admin.get("/compute/v2.1/servers/detail?all_tenants=True").await.unwrap();
    assert_eq!(all["servers"].as_array().unwrap().len(), 2);

    // A reader of alice's project sees but cannot create or delete.
    let project = alice.get(&format!("/compute/v2.1/servers/{a}")).await.unwrap()["server"]["tenant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let reader = t.user_on(&project, "reader").await;
    assert_eq!(reader.get("/compute/v2.1/servers").await.unwrap()["servers"].as_array().unwrap().len(), 1);
    let image = default_image(&reader).await;
    let (status, body) = reader
        .raw(
            Method::POST,
            "/compute/v2.1/servers",
            Some(&json!({"server": {"name": "x", "imageRef": image, "flavorRef": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 403, "{body}");
    assert!(body["forbidden"]["message"].as_str().unwrap().contains("os_compute_api:servers:create"));
    let (status, _) = reader.raw(Method::DELETE, &format!("/compute/v2.1/servers/{a}"), None).await.unwrap();
    assert_eq!(status.as_u16(), 403);
    t.shutdown().await;
}

#[tokio::test]
async fn server_list_filters_work_or_are_refused() {
    let t = TestCloud::start().await;
    let a = create_server(&t.admin, "web-1").await;
    let b = create_server(&t.admin, "db-1").await;
    wait_for_status(&t.admin, &a, "ACTIVE").await;
    let b_shown = wait_for_status(&t.admin, &b, "ACTIVE").await;
    let ids = |path: String| {
        let admin = &t.admin;
        async move {
            let listed = admin.get(&path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
            let mut ids: Vec<String> =
                listed["servers"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
            ids.sort();
            ids
        }
    };
    let both = {
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        both
    };
    let b_ip = fixed_addresses(&b_shown)[0].clone();
    let b_host = b_shown["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    let image = b_shown["image"]["id"].as_str().unwrap().to_string();
    for (query, expected) in [
        ("name=web&deleted=False".to_string(), vec![a.clone()]),
        ("name=^db-".to_string(), vec![b.clone()]),
        ("name=-1$".to_string(), both.clone()),
        ("status=ACTIVE".to_string(), both.clone()),
        ("status=ERROR".to_string(), vec![]),
        (format!("ip={}$", regex_escape(&b_ip)), vec![b.clone()]),
        ("ip=^192\\.".to_string(), vec![]),
        (format!("image={image}"), both.clone()),
        ("image=nothing".to_string(), vec![]),
        ("flavor=1".to_string(), both.clone()),
        ("flavor=2".to_string(), vec![]),
        ("changes-since=2000-01-01T00:00:00Z".to_string(), both.clone()),
        ("changes-since=2999-01-01T00:00:00%2B01:00".to_string(), vec![]),
        ("vm_state=active".to_string(), both.clone()),
        ("vm_state=stopped".to_string(), vec![]),
        ("key_name=none-made".to_string(), vec![]),
    ] {
        let got = ids(format!("/compute/v2.1/servers/detail?{query}")).await;
        assert_eq!(got, expected, "?{query}");
    }
    let on_host: Vec<String> = ids(format!("/compute/v2.1/servers?host={b_host}")).await;
    assert!(on_host.contains(&b), "the admin's host filter: {on_host:?}");
    let limited = t.admin.get("/compute/v2.1/servers?limit=1").await.unwrap();
    assert_eq!(limited["servers"].as_array().unwrap().len(), 1);

    // A filter nimbus does not apply, a bad regular expression or time, or an admin's filter asked by a
    // member, is refused: never a list the client would take for the filtered one.
    let member = t.user_with_role("member").await;
    for (client, query, code) in [
        (&t.admin, "sort_key=display_name", 400),
        (&t.admin, "tags=web", 400),
        (&t.admin, "deleted=true", 400),
        (&t.admin, "name=(", 400),
        (&t.admin, "ip=[", 400),
        (&t.admin, "changes-since=yesterday", 400),
        (&member, "host=host-0001", 403),
    ] {
        let (got, answer) = status(client, Method::GET, &format!("/compute/v2.1/servers?{query}"), None).await;
        assert_eq!(got, code, "?{query}: {answer}");
    }
    t.shutdown().await;
}

fn regex_escape(text: &str) -> String {
    text.replace('.', "\\.")
}

#[tokio::test]
async fn flavor_lists_filter_sort_and_page_as_nova_s() {
    let t = TestCloud::start().await;
    let member = t.user_with_role("member").await;
    let names = |path: &'static str| {
        let member = &member;
        async move {
            let listed = member.get(path).await.unwrap_or_else(|e| panic!("{path}: {e}"));
            listed["flavors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("/compute/v2.1/flavors").await, ["m1.tiny", "m1.small", "m1.medium", "m1.large"]);
    assert_eq!(names("/compute/v2.1/flavors/detail?minRam=4096").await, ["m1.medium", "m1.large"]);
    assert_eq!(names("/compute/v2.1/flavors?minDisk=41").await, ["m1.large"]);
    assert_eq!(
        names("/compute/v2.1/flavors?sort_key=name&sort_dir=asc").await,
        ["m1.large", "m1.medium", "m1.small", "m1.tiny"]
    );
    assert_eq!(
        names("/compute/v2.1/flavors?sort_key=memory_mb&sort_dir=desc&limit=2").await,
        ["m1.large", "m1.medium"]
    );
    assert_eq!(names("/compute/v2.1/flavors?marker=2&limit=1").await, ["m1.medium"]);
    for (query, code) in [
        ("is_public=maybe", 400),
        ("sort_key=disabled", 400),
        ("sort_dir=sideways", 400),
        ("minRam=lots", 400),
        ("marker=99", 400),
    ] {
        let (got, answer) = status(&member, Method::GET, &format!("/compute/v2.1/flavors?{query}"), None).await;
        assert_eq!(got, code, "?{query}: {answer}");
    }
    // A member may use the public flavors only: `none` (all they may use) is those, `false` none of them.
    assert_eq!(names("/compute/v2.1/flavors?is_public=none").await.len(), 4);
    assert!(names("/compute/v2.1/flavors?is_public=false").await.is_empty());
    let (got, answer) = status(&t.admin, Method::GET, "/compute/v2.1/flavors?is_public=none", None).await;
    assert_eq!((got, answer["flavors"].as_array().map(Vec::len)), (200, Some(4)), "{answer}");
    t.shutdown().await;
}

/// Every page of a list, following its `next` links from `first`; each page's ids.
async fn pages(client: &nimbus::client::Client, base: &str, first: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut path = Some(first.to_string());
    while let Some(p) = path.take() {
        let page = client.get(&p).await.unwrap();
        out.push(page["servers"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect());
        if let Some(next) = page["servers_links"].as_array().and_then(|links| links.iter().find(|l| l["rel"] == "next"))
        {
            path = Some(next["href"].as_str().unwrap().strip_prefix(base).unwrap().to_string());
        }
    }
    out
}

#[tokio::test]
async fn server_lists_page_newest_first_with_limit_and_marker() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let bob = t.user_with_role("member").await;
    let mut mine = Vec::new();
    for n in 0..7 {
        mine.push(create_server(&alice, &format!("{}-{n}", if n % 2 == 0 { "even" } else { "odd" })).await);
    }
    let theirs = create_server(&bob, "bob-vm").await;
    for id in mine.iter().chain([&theirs]) {
        wait_for_status(&t.admin, id, "ACTIVE").await;
    }
    let whole = alice.get("/compute/v2.1/servers/detail").await.unwrap();
    let whole = whole["servers"].as_array().unwrap();
    assert!(whole.windows(2).all(|w| w[0]["created"].as_str() >= w[1]["created"].as_str()), "newest first");
    let order: Vec<String> = whole.iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(order.iter().collect::<BTreeSet<_>>(), mine.iter().collect::<BTreeSet<_>>(), "only alice's");

    // Pages of 3 follow the `next` links to the end: 3 + 3 + 1, in the whole list's order.
    let paged = pages(&alice, t.url(), "/compute/v2.1/servers/detail?limit=3").await;
    assert_eq!(paged.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    assert_eq!(paged.concat(), order);
    // A page that ends the list exactly still has a next link, to an empty page (as Nova).
    let exact = pages(&alice, t.url(), "/compute/v2.1/servers?limit=7").await;
    assert_eq!(exact.iter().map(Vec::len).collect::<Vec<_>>(), [7, 0]);
    // Filters hold across pages.
    let odd = pages(&alice, t.url(), "/compute/v2.1/servers?name=odd&limit=2").await.concat();
    let expected: Vec<String> = whole
        .iter()
        .filter(|s| s["name"].as_str().unwrap().starts_with("odd"))
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((odd.len(), &odd), (3, &expected));
    // After a marker: the rest of the list.
    let after = alice.get(&format!("/compute/v2.1/servers?marker={}", order[4])).await.unwrap();
    let rest: Vec<&str> = after["servers"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(rest, order[5..].iter().map(String::as_str).collect::<Vec<_>>());
    assert!(after.get("servers_links").is_none(), "a page that is not full has no next link: {after}");
    let none = alice.get("/compute/v2.1/servers?limit=0").await.unwrap();
    assert_eq!(none["servers"].as_array().unwrap().len(), 0);

    // A marker the caller cannot see, or no server at all, is a 400 naming it.
    for marker in [theirs.as_str(), "not-a-uuid", "7d0c2bd4-51c6-4b5e-9d0e-000000000000"] {
        let (status, body) =
            alice.raw(Method::GET, &format!("/compute/v2.1/servers?marker={marker}"), None).await.unwrap();
        assert_eq!(status.as_u16(), 400, "{marker}: {body}");
        assert_eq!(body["badRequest"]["message"], format!("marker [{marker}] not found"));
    }

    // An admin pages through every project, or one.
    let everyone = pages(&t.admin, t.url(), "/compute/v2.1/servers?all_tenants=1&limit=2").await.concat();
    assert_eq!(everyone.len(), 8);
    assert_eq!(everyone.iter().filter(|id| **id != theirs).cloned().collect::<Vec<_>>(), order);
    let project = whole[0]["tenant_id"].as_str().unwrap();
    let one =
        pages(&t.admin, t.url(), &format!("/compute/v2.1/servers?all_tenants=1&project_id={project}&limit=4")).await;
    assert_eq!(one.concat(), order);

    // A deleted server leaves the lists.
    t.admin.delete(&format!("/compute/v2.1/servers/{}", order[0])).await.unwrap();
    wait_for_gone(&t.admin, &order[0]).await;
    assert_eq!(pages(&alice, t.url(), "/compute/v2.1/servers?limit=3").await.concat(), order[1..]);
    t.shutdown().await;
}

#[tokio::test]
async fn hypervisors_and_services_show_the_hosts() {
    let t = TestCloud::start_with(Options { hosts: 3, ..Options::default() }).await;
    let hypervisors = t.admin.get("/compute/v2.1/os-hypervisors/detail").await.unwrap();
    let names: Vec<&str> = hypervisors["hypervisors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hypervisor_hostname"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["host-0001", "host-0002", "host-0003"]);
    assert!(
        hypervisors["hypervisors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["state"] == "up" && h["hypervisor_type"] == "fake")
    );
    let services = t.admin.get("/compute/v2.1/os-services").await.unwrap();
    assert_eq!(services["services"].as_array().unwrap().len(), 3);
    assert!(
        services["services"].as_array().unwrap().iter().all(|s| s["binary"] == "nova-compute" && s["state"] == "up")
    );
    let count = |query: &'static str| {
        let admin = t.admin.clone();
        async move {
            let listed = admin.get(&format!("/compute/v2.1/os-services?{query}")).await.unwrap();
            listed["services"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("host=host-0002").await, 1);
    assert_eq!(count("host=host-0002&binary=nova-compute").await, 1);
    assert_eq!(count("binary=nova-scheduler").await, 0, "nimbus's hosts run nova-compute only");
    assert_eq!(count("host=elsewhere").await, 0);
    let (status, _) = t.admin.raw(Method::GET, "/compute/v2.1/os-services?zone=nova", None).await.unwrap();
    assert_eq!(status.as_u16(), 400, "a filter os-services does not have is refused, not ignored");
    let member = t.user_with_role("member").await;
    let (status, _) = member.raw(Method::GET, "/compute/v2.1/os-hypervisors", None).await.unwrap();
    assert_eq!(status.as_u16(), 403);

    // One hypervisor, the sums, a search by name, the servers on matching hosts, the uptime.
    let vm = boot_active(&member, "on-a-host").await;
    let vm = server(&t.admin, vm["id"].as_str().unwrap()).await.unwrap();
    let host = vm["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    let number = hypervisors["hypervisors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hypervisor_hostname"] == host.as_str())
        .unwrap()["id"]
        .clone();
    let one = t.admin.get(&format!("/compute/v2.1/os-hypervisors/{number}")).await.unwrap();
    assert_eq!(one["hypervisor"]["hypervisor_hostname"], host.as_str());
    assert_eq!(one["hypervisor"]["running_vms"], 1);
    let sums = t.admin.get("/compute/v2.1/os-hypervisors/statistics").await.unwrap();
    assert_eq!(sums["hypervisor_statistics"]["count"], 3);
    assert_eq!(sums["hypervisor_statistics"]["running_vms"], 1);
    assert_eq!(sums["hypervisor_statistics"]["vcpus_used"], 1);
    let found = t.admin.get("/compute/v2.1/os-hypervisors/host-000/search").await.unwrap();
    assert_eq!(found["hypervisors"].as_array().unwrap().len(), 3);
    let on = t.admin.get(&format!("/compute/v2.1/os-hypervisors/{host}/servers")).await.unwrap();
    assert_eq!(on["hypervisors"][0]["servers"], json!([{"name": "on-a-host", "uuid": vm["id"]}]));
    let uptime = t.admin.get(&format!("/compute/v2.1/os-hypervisors/{number}/uptime")).await.unwrap();
    let line = uptime["hypervisor"]["uptime"].as_str().unwrap();
    assert!(line.contains(" up ") && line.contains("load average: "), "{line}");
    for path in [
        "/compute/v2.1/os-hypervisors/999",
        "/compute/v2.1/os-hypervisors/nothing",
        "/compute/v2.1/os-hypervisors/zzz/search",
        "/compute/v2.1/os-hypervisors/zzz/servers",
        "/compute/v2.1/os-hypervisors/999/uptime",
    ] {
        assert_eq!(status_of(&t.admin, path).await, 404, "{path}");
    }
    assert_eq!(status_of(&member, "/compute/v2.1/os-hypervisors/statistics").await, 403);
    t.shutdown().await;
}

async fn status_of(client: &nimbus::client::Client, path: &str) -> u16 {
    status(client, Method::GET, path, None).await.0
}

#[tokio::test]
async fn the_capacity_of_deleted_servers_is_free_again_at_once() {
    // Two hosts with room for six m1.tiny each (2048 MB × 1.5 RAM ratio).
    let small = Capacity { vcpus: 4, ram_mb: 2048, disk_gb: 100 };
    let t = TestCloud::start_with(Options { hosts: 2, capacity: small, ..Options::default() }).await;
    let image = default_image(&t.admin).await;
    let twelve =
        json!({"server": {"name": "fill", "imageRef": image, "flavorRef": "1", "min_count": 12, "max_count": 12}});
    for round in 0..2 {
        t.admin.post("/compute/v2.1/servers", &twelve).await.unwrap();
        wait_until(&format!("round {round}: 12 ACTIVE"), Duration::from_secs(30), || async {
            let listed = t.admin.get("/compute/v2.1/servers/detail").await.unwrap();
            let servers = listed["servers"].as_array().unwrap().clone();
            let faults: Vec<&Value> =
                servers.iter().filter(|s| s["status"] == "ERROR").map(|s| &s["fault"]["message"]).collect();
            assert!(faults.is_empty(), "round {round}: {faults:?}");
            servers.len() == 12 && servers.iter().all(|s| s["status"] == "ACTIVE")
        })
        .await;
        let listed = t.admin.get("/compute/v2.1/servers").await.unwrap();
        for s in listed["servers"].as_array().unwrap() {
            t.admin.delete(&format!("/compute/v2.1/servers/{}", s["id"].as_str().unwrap())).await.unwrap();
        }
        wait_until("all deleted", Duration::from_secs(30), || async {
            t.admin.get("/compute/v2.1/servers").await.unwrap()["servers"].as_array().unwrap().is_empty()
        })
        .await;
    }
    t.shutdown().await;
}

#[tokio::test]
async fn a_server_is_renamed_by_its_project_and_nothing_else_is_taken_for_a_change() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let member = t.user_on(&project, "member").await;
    let reader = t.user_on(&project, "reader").await;
    let stranger = t.user_with_role("member").await;
    let id = create_server(&member, "old-name").await;
    wait_for_status(&member, &id, "ACTIVE").await;
    let path = format!("/compute/v2.1/servers/{id}");
    let rename = |name: &str| json!({"server": {"name": name}});

    let (status, renamed) = member.raw(Method::PUT, &path, Some(&rename("new name"))).await.unwrap();
    assert_eq!(status.as_u16(), 200, "{renamed}");
    assert_eq!(renamed["server"]["name"], "new name");
    assert_eq!(renamed["server"]["status"], "ACTIVE");
    assert_eq!(member.get(&path).await.unwrap()["server"]["name"], "new name");
    for (client, body, expected, why) in [
        (&member, rename(""), 400, "an empty name"),
        (&member, json!({"server": {"accessIPv4": "192.0.2.7"}}), 400, "access IPs nimbus does not keep"),
        (&member, json!({"server": {"description": "2.19's field"}}), 400, "a later microversion's field"),
        (&member, json!({"name": "no wrapper"}), 400, "no server object"),
        (&reader, rename("reader's"), 403, "a reader"),
        (&stranger, rename("stranger's"), 404, "another project"),
    ] {
        let (status, answer) = client.raw(Method::PUT, &path, Some(&body)).await.unwrap();
        assert_eq!(status.as_u16(), expected, "{why}: {answer}");
    }
    assert_eq!(member.get(&path).await.unwrap()["server"]["name"], "new name", "refusals changed nothing");
    t.shutdown().await;
}

#[tokio::test]
async fn server_metadata_is_set_merged_replaced_and_deleted_within_its_limits() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let member = t.user_on(&project, "member").await;
    let reader = t.user_on(&project, "reader").await;
    let image = default_image(&member).await;
    let body = json!({"server": {"name": "meta", "imageRef": image, "flavorRef": "1", "metadata": {"role": "web"}}});
    let created = member.post("/compute/v2.1/servers", &body).await.unwrap();
    let id = created["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_for_status(&member, &id, "ACTIVE").await["metadata"], json!({"role": "web"}));
    let path = format!("/compute/v2.1/servers/{id}/metadata");
    let send = |method: Method, path: String, body: Option<Value>| {
        let member = member.clone();
        async move { status(&member, method, &path, body).await }
    };

    let (status, merged) = send(Method::POST, path.clone(), Some(json!({"metadata": {"tier": "1"}}))).await;
    assert_eq!((status, &merged["metadata"]), (200, &json!({"role": "web", "tier": "1"})));
    let (status, one) = send(Method::PUT, format!("{path}/tier"), Some(json!({"meta": {"tier": "2"}}))).await;
    assert_eq!((status, &one["meta"]), (200, &json!({"tier": "2"})));
    assert_eq!(member.get(&format!("{path}/tier")).await.unwrap()["meta"], json!({"tier": "2"}));
    let (status, replaced) = send(Method::PUT, path.clone(), Some(json!({"metadata": {"only": "this"}}))).await;
    assert_eq!((status, &replaced["metadata"]), (200, &json!({"only": "this"})));
    assert_eq!(
        member.get(&format!("/compute/v2.1/servers/{id}")).await.unwrap()["server"]["metadata"],
        json!({"only": "this"})
    );
    assert_eq!(send(Method::DELETE, format!("{path}/only"), None).await.0, 204);
    assert_eq!(send(Method::DELETE, format!("{path}/only"), None).await.0, 404);
    assert_eq!(send(Method::GET, format!("{path}/only"), None).await.0, 404);

    let many: serde_json::Map<String, Value> = (0..129).map(|n| (format!("k{n}"), json!("v"))).collect();
    for (method, at, body, expected, why) in [
        (Method::POST, path.clone(), json!({"metadata": many}), 403, "over 128 items"),
        (Method::POST, path.clone(), json!({"metadata": {"": "v"}}), 400, "an empty key"),
        (Method::POST, path.clone(), json!({"metadata": {"k": "v".repeat(256)}}), 400, "a value over 255"),
        (Method::POST, path.clone(), json!({"metadata": {"k": 7}}), 400, "a value that is not a string"),
        (Method::PUT, format!("{path}/a"), json!({"meta": {"b": "v"}}), 400, "a key other than the path's"),
        (Method::PUT, format!("{path}/a"), json!({"meta": {"a": "v", "b": "v"}}), 400, "more than one item"),
    ] {
        let (status, answer) = send(method, at, Some(body)).await;
        assert_eq!(status, expected, "{why}: {answer}");
    }
    let (status, _) = reader.raw(Method::POST, &path, Some(&json!({"metadata": {"r": "v"}}))).await.unwrap();
    assert_eq!(status.as_u16(), 403, "a reader reads, and changes nothing");
    assert_eq!(reader.get(&path).await.unwrap()["metadata"], json!({}));
    let (status, _) = member
        .raw(
            Method::POST,
            "/compute/v2.1/servers",
            Some(&json!({"server": {"name": "m", "imageRef": image,
            "flavorRef": "1", "metadata": {"k": ["not", "text"]}}})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400, "metadata on create is checked too");
    let quota = format!("/compute/v2.1/os-quota-sets/{project}");
    let (status, answer) =
        t.admin.raw(Method::PUT, &quota, Some(&json!({"quota_set": {"metadata_items": 5}}))).await.unwrap();
    assert_eq!(status.as_u16(), 400, "a limit that would not be honoured is refused: {answer}");
    assert_eq!(t.admin.get(&quota).await.unwrap()["quota_set"]["metadata_items"], 128);
    t.shutdown().await;
}

#[tokio::test]
async fn the_compute_versions_list_v2_0_and_v2_1_and_each_self_link_answers() {
    let t = TestCloud::start().await;
    let listed = t.admin.get("/compute/").await.unwrap();
    let versions = listed["versions"].as_array().unwrap();
    let ids: Vec<&str> = versions.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["v2.0", "v2.1"]);
    assert_eq!((versions[0]["status"].as_str(), versions[1]["status"].as_str()), (Some("SUPPORTED"), Some("CURRENT")));
    for version in versions {
        let href = version["links"][0]["href"].as_str().unwrap();
        let path = href.strip_prefix(t.url()).unwrap_or_else(|| panic!("{href} is on this cloud"));
        let answered = t.admin.get(path).await.unwrap();
        assert_eq!(answered["version"]["id"], version["id"], "{href}");
    }
    t.shutdown().await;
}

/// The fake host's view of the server's guest.
fn guest_power(t: &TestCloud, server: &Value) -> Option<nimbus_actors::compute::virt::GuestPower> {
    let id = server["id"].as_str().unwrap().parse().unwrap();
    t.cloud.hypervisors.values().find_map(|h| h.power_of(id))
}

#[tokio::test]
async fn power_actions_move_a_server_through_nova_s_states_and_refuse_what_the_state_does_not_allow() {
    use nimbus_actors::compute::virt::GuestPower;
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let vm = boot_active(&alice, "vm").await;
    let id = vm["id"].as_str().unwrap().to_string();
    let action = format!("/compute/v2.1/servers/{id}/action");
    let act = |body: Value| {
        let (alice, action) = (&alice, &action);
        async move { status(alice, Method::POST, action, Some(body)).await }
    };

    for (body, status_after, power_state, guest) in [
        (json!({"os-stop": null}), "SHUTOFF", 4, GuestPower::Off),
        (json!({"reboot": {"type": "HARD"}}), "ACTIVE", 1, GuestPower::Running),
        (json!({"pause": null}), "PAUSED", 3, GuestPower::Paused),
        (json!({"unpause": null}), "ACTIVE", 1, GuestPower::Running),
        (json!({"suspend": null}), "SUSPENDED", 7, GuestPower::Suspended),
        (json!({"resume": null}), "ACTIVE", 1, GuestPower::Running),
        (json!({"reboot": {"type": "SOFT"}}), "ACTIVE", 1, GuestPower::Running),
        (json!({"os-stop": null}), "SHUTOFF", 4, GuestPower::Off),
    ] {
        let (got, answer) = act(body.clone()).await;
        assert_eq!(got, 202, "{body}: {answer}");
        let shown = wait_for_status(&alice, &id, status_after).await;
        wait_until(&format!("{body} to settle"), Duration::from_secs(10), || async {
            server(&alice, &id).await.is_some_and(|s| s["OS-EXT-STS:task_state"].is_null())
        })
        .await;
        assert_eq!(shown["OS-EXT-STS:power_state"], power_state, "{body}");
        assert_eq!(guest_power(&t, &vm), Some(guest), "{body}");
    }

    // What a stopped server cannot do is a 409 naming its state; a bad reboot type is a 400.
    for (body, expected) in [
        (json!({"os-stop": null}), "Cannot 'stop' instance"),
        (json!({"pause": null}), "vm_state stopped"),
        (json!({"reboot": {"type": "SOFT"}}), "Cannot 'reboot' instance"),
        (json!({"resume": null}), "vm_state stopped"),
    ] {
        let (got, answer) = act(body.clone()).await;
        assert_eq!(got, 409, "{body}: {answer}");
        assert!(answer.to_string().contains(expected), "{body}: {answer}");
    }
    let (got, answer) = act(json!({"reboot": {"type": "GENTLE"}})).await;
    assert_eq!(got, 400, "{answer}");
    let (got, answer) = act(json!({"hibernate": null})).await;
    assert_eq!(got, 400, "{answer}");
    assert!(answer.to_string().contains("os-stop"), "the refusal lists what nimbus supports: {answer}");
    let reader = t.user_on(vm["tenant_id"].as_str().unwrap(), "reader").await;
    assert_eq!(status(&reader, Method::POST, &action, Some(json!({"os-start": null}))).await.0, 403);

    // A restarted cloud runs its hosts' instances again in their state: still off.
    let t = t.restart(Options::default()).await;
    wait_until("the stopped server to be restored off", Duration::from_secs(10), || async {
        guest_power(&t, &vm) == Some(GuestPower::Off)
    })
    .await;
    let alice = t.user_on(vm["tenant_id"].as_str().unwrap(), "member").await;
    assert_eq!(status(&alice, Method::POST, &action, Some(json!({"os-start": null}))).await.0, 202);
    wait_for_status(&alice, &id, "ACTIVE").await;
    // A stopped server can be deleted.
    assert_eq!(status(&alice, Method::POST, &action, Some(json!({"os-stop": null}))).await.0, 202);
    wait_for_status(&alice, &id, "SHUTOFF").await;
    assert_eq!(status(&alice, Method::DELETE, &format!("/compute/v2.1/servers/{id}"), None).await.0, 204);
    wait_for_gone(&alice, &id).await;
    t.shutdown().await;
}
