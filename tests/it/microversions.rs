//! Compute microversions 2.1 to 2.36: the version negotiated and echoed, and each step's documented change to
//! requests and responses, asked for at the step before and at the step itself (the fields of a response are
//! exactly those of the version asked for).

use std::collections::BTreeSet;

use nimbus::client::Client;
use nimbus_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Sends a request at compute microversion `version`; returns the status, the echoed version and the body.
async fn at(
    t: &TestCloud,
    client: &Client,
    version: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", t.url()))
        .header("x-auth-token", client.token())
        .header("OpenStack-API-Version", format!("compute {version}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the cloud answers");
    let status = response.status().as_u16();
    let echoed =
        response.headers().get("openstack-api-version").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = response.text().await.unwrap();
    (status, echoed, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

/// The keys `newer` has that `older` lacks, and none lost.
fn added(older: &Value, newer: &Value) -> BTreeSet<String> {
    let (old, new) = (keys(older), keys(newer));
    assert!(old.is_subset(&new), "a newer version lost fields: {:?}", old.difference(&new).collect::<Vec<_>>());
    new.difference(&old).cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_version_is_negotiated_echoed_and_bounded() {
    let t = TestCloud::start().await;
    let (code, echoed, body) = at(&t, &t.admin, "2.9", Method::GET, "/compute/v2.1", None).await;
    assert_eq!((code, echoed.as_str()), (200, "compute 2.9"));
    assert_eq!(
        (body["version"]["version"].as_str(), body["version"]["min_version"].as_str()),
        (Some("2.36"), Some("2.1"))
    );
    let (_, echoed, _) = at(&t, &t.admin, "latest", Method::GET, "/compute/v2.1/flavors", None).await;
    assert_eq!(echoed, "compute 2.36");
    for refused in ["2.37", "2.0", "3.1"] {
        let (code, _, body) = at(&t, &t.admin, refused, Method::GET, "/compute/v2.1/flavors", None).await;
        assert_eq!(code, 406, "{refused}: {body}");
    }
    t.shutdown().await;
}

#[tokio::test]
async fn key_pairs_gain_their_type_at_2_2_and_an_admin_manages_anyones_at_2_10() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let alice_login = new_user_on(&t.admin, &project, "member").await;
    let alice = alice_login.client(t.url()).await;
    let kp = "/compute/v2.1/os-keypairs";

    let (code, _, old) = at(&t, &alice, "2.1", Method::POST, kp, Some(json!({"keypair": {"name": "k1"}}))).await;
    assert_eq!(code, 200, "{old}");
    let (code, _, new) =
        at(&t, &alice, "2.2", Method::POST, kp, Some(json!({"keypair": {"name": "k2", "type": "ssh"}}))).await;
    assert_eq!(code, 201, "{new}");
    assert_eq!(added(&old["keypair"], &new["keypair"]), set(&["type"]));
    assert_eq!(new["keypair"]["type"], "ssh");
    let (_, _, listed) = at(&t, &alice, "2.2", Method::GET, kp, None).await;
    assert!(listed["keypairs"].as_array().unwrap().iter().all(|k| k["keypair"]["type"] == "ssh"), "{listed}");
    let (_, _, shown_old) = at(&t, &alice, "2.1", Method::GET, &format!("{kp}/k1"), None).await;
    let (_, _, shown_new) = at(&t, &alice, "2.2", Method::GET, &format!("{kp}/k1"), None).await;
    assert_eq!(added(&shown_old["keypair"], &shown_new["keypair"]), set(&["type"]));
    for (version, body, code) in [
        ("2.1", json!({"keypair": {"name": "k3", "type": "ssh"}}), 400),
        ("2.2", json!({"keypair": {"name": "k3", "type": "x509"}}), 400),
        ("2.9", json!({"keypair": {"name": "k3", "user_id": "someone"}}), 400),
    ] {
        let (got, _, answer) = at(&t, &alice, version, Method::POST, kp, Some(body.clone())).await;
        assert_eq!(got, code, "{version} {body}: {answer}");
    }
    let (code, _, _) = at(&t, &alice, "2.1", Method::DELETE, &format!("{kp}/k1"), None).await;
    assert_eq!(code, 202);
    let (code, _, _) = at(&t, &alice, "2.2", Method::DELETE, &format!("{kp}/k2"), None).await;
    assert_eq!(code, 204);

    // 2.10: the admin makes, lists and deletes a key pair of alice's; alice cannot name another user.
    let (code, _, made) = at(
        &t,
        &t.admin,
        "2.10",
        Method::POST,
        kp,
        Some(json!({"keypair": {"name": "given", "user_id": alice_login.user}})),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    let owner = made["keypair"]["user_id"].as_str().unwrap().to_string();
    let (_, _, mine) = at(&t, &alice, "2.10", Method::GET, kp, None).await;
    assert_eq!(mine["keypairs"][0]["keypair"]["name"], "given", "alice has the key the admin made: {mine}");
    let (_, _, theirs) = at(&t, &t.admin, "2.10", Method::GET, &format!("{kp}?user_id={owner}"), None).await;
    assert_eq!(theirs["keypairs"].as_array().unwrap().len(), 1, "{theirs}");
    let (code, _, _) = at(&t, &alice, "2.10", Method::GET, &format!("{kp}?user_id=admin"), None).await;
    assert_eq!(code, 403);
    let (code, _, _) = at(&t, &t.admin, "2.9", Method::GET, &format!("{kp}?user_id={owner}"), None).await;
    assert_eq!(code, 400, "user_id is 2.10's");
    let (code, _, _) = at(&t, &t.admin, "2.10", Method::DELETE, &format!("{kp}/given?user_id={owner}"), None).await;
    assert_eq!(code, 204);
    t.shutdown().await;
}

#[tokio::test]
async fn a_servers_view_gains_each_steps_fields_and_no_others() {
    let t = TestCloud::start().await;
    let member = t.user_with_role("member").await;
    let image = default_image(&member).await;
    let body = json!({"server": {"name": "mv", "imageRef": image, "flavorRef": "1", "user_data": "aGVsbG8="}});
    let created = member.post("/compute/v2.1/servers", &body).await.unwrap();
    let id = created["server"]["id"].as_str().unwrap().to_string();
    wait_for_status(&member, &id, "ACTIVE").await;
    let path = format!("/compute/v2.1/servers/{id}");
    let show = |client: &Client, version: &'static str| {
        let (t, client, path) = (&t, client.clone(), path.clone());
        async move { at(t, &client, version, Method::GET, &path, None).await.2["server"].clone() }
    };

    // An admin's view, step by step.
    let steps = [
        ("2.1", "2.2", set(&[])),
        (
            "2.2",
            "2.3",
            set(&[
                "OS-EXT-SRV-ATTR:reservation_id",
                "OS-EXT-SRV-ATTR:launch_index",
                "OS-EXT-SRV-ATTR:hostname",
                "OS-EXT-SRV-ATTR:kernel_id",
                "OS-EXT-SRV-ATTR:ramdisk_id",
                "OS-EXT-SRV-ATTR:root_device_name",
                "OS-EXT-SRV-ATTR:user_data",
            ]),
        ),
        ("2.8", "2.9", set(&["locked"])),
        ("2.15", "2.16", set(&["host_status"])),
        ("2.18", "2.19", set(&["description"])),
        ("2.25", "2.26", set(&["tags"])),
        ("2.35", "2.36", set(&[])),
    ];
    for (before, after, fields) in steps {
        let (old, new) = (show(&t.admin, before).await, show(&t.admin, after).await);
        assert_eq!(added(&old, &new), fields, "{before} → {after}");
    }
    let latest = show(&t.admin, "2.36").await;
    assert!(latest["OS-EXT-SRV-ATTR:reservation_id"].as_str().unwrap().starts_with("r-"), "{latest}");
    assert_eq!(latest["OS-EXT-SRV-ATTR:launch_index"], 0);
    assert_eq!(latest["OS-EXT-SRV-ATTR:hostname"], "mv");
    assert_eq!(latest["OS-EXT-SRV-ATTR:user_data"], "aGVsbG8=");
    assert_eq!((latest["locked"].clone(), latest["host_status"].clone()), (json!(false), json!("UP")));
    assert!(latest["description"].is_null(), "{latest}");
    // A member sees 2.9's and 2.19's fields, not an admin's.
    let (old, new) = (show(&member, "2.1").await, show(&member, "2.36").await);
    assert_eq!(added(&old, &new), set(&["locked", "description", "tags"]));

    // 2.19: the description is taken on create and update, refused before.
    let with = json!({"server": {"name": "described", "imageRef": image, "flavorRef": "1", "description": "web tier"}});
    let (code, _, body) = at(&t, &member, "2.18", Method::POST, "/compute/v2.1/servers", Some(with.clone())).await;
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = at(&t, &member, "2.19", Method::POST, "/compute/v2.1/servers", Some(with)).await;
    assert_eq!(code, 202, "{body}");
    let described = body["server"]["id"].as_str().unwrap().to_string();
    let (_, _, shown) = at(&t, &member, "2.19", Method::GET, &format!("/compute/v2.1/servers/{described}"), None).await;
    assert_eq!(shown["server"]["description"], "web tier");
    let change = json!({"server": {"description": "db tier"}});
    let (code, _, updated) = at(&t, &member, "2.19", Method::PUT, &path, Some(change.clone())).await;
    assert_eq!((code, updated["server"]["description"].as_str()), (200, Some("db tier")), "{updated}");
    let (code, _, _) = at(&t, &member, "2.18", Method::PUT, &path, Some(change)).await;
    assert_eq!(code, 400);
    let (_, _, cleared) =
        at(&t, &member, "2.19", Method::PUT, &path, Some(json!({"server": {"description": null}}))).await;
    assert!(cleared["server"]["description"].is_null(), "{cleared}");
    let (_, _, listed) = at(&t, &member, "2.19", Method::GET, "/compute/v2.1/servers/detail", None).await;
    assert!(listed["servers"].as_array().unwrap().iter().any(|s| s["description"] == "web tier"), "{listed}");
    let (code, _, _) =
        at(&t, &member, "2.19", Method::PUT, &path, Some(json!({"server": {"description": "x".repeat(256)}}))).await;
    assert_eq!(code, 400);
    t.shutdown().await;
}

#[tokio::test]
async fn the_other_steps_change_what_they_document() {
    let t = TestCloud::start().await;
    let vm = boot_active(&t.admin, "steps").await;
    let id = vm["id"].as_str().unwrap().to_string();
    let address = fixed_addresses(&vm)[0].clone();

    // 2.4: os-fixed-ips shows whether the address is reserved.
    let fixed = format!("/compute/v2.1/os-fixed-ips/{address}");
    let (_, _, old) = at(&t, &t.admin, "2.3", Method::GET, &fixed, None).await;
    let (_, _, new) = at(&t, &t.admin, "2.4", Method::GET, &fixed, None).await;
    assert_eq!(keys(&old["fixed_ip"]), set(&["address", "cidr", "hostname", "host"]));
    assert_eq!(added(&old["fixed_ip"], &new["fixed_ip"]), set(&["reserved"]));
    assert_eq!(new["fixed_ip"]["reserved"], false);

    // 2.6 / 2.8: remote consoles exist, and nimbus's instances have none to give.
    let consoles = format!("/compute/v2.1/servers/{id}/remote-consoles");
    let ask = |protocol: &str| Some(json!({"remote_console": {"protocol": protocol, "type": protocol}}));
    let (code, _, _) = at(&t, &t.admin, "2.5", Method::POST, &consoles, ask("vnc")).await;
    assert_eq!(code, 404);
    let (code, _, body) = at(&t, &t.admin, "2.6", Method::POST, &consoles, ask("vnc")).await;
    assert_eq!(code, 400);
    assert!(body.to_string().contains("Unavailable console type"), "{body}");
    let (code, _, body) = at(&t, &t.admin, "2.6", Method::POST, &consoles, ask("mks")).await;
    assert!(code == 400 && body.to_string().contains("Invalid protocol"), "{body}");
    let (code, _, body) = at(&t, &t.admin, "2.8", Method::POST, &consoles, ask("mks")).await;
    assert!(code == 400 && body.to_string().contains("Unavailable console type"), "{body}");

    // 2.11: services show whether they are forced down.
    let (_, _, old) = at(&t, &t.admin, "2.10", Method::GET, "/compute/v2.1/os-services", None).await;
    let (_, _, new) = at(&t, &t.admin, "2.11", Method::GET, "/compute/v2.1/os-services", None).await;
    assert_eq!(added(&old["services"][0], &new["services"][0]), set(&["forced_down"]));

    // 2.17: the crash dump action exists, and is refused with the reason.
    let action = format!("/compute/v2.1/servers/{id}/action");
    let dump = Some(json!({"trigger_crash_dump": null}));
    let (code, _, before) = at(&t, &t.admin, "2.16", Method::POST, &action, dump.clone()).await;
    assert_eq!(code, 400, "{before}");
    let (code, _, after) = at(&t, &t.admin, "2.17", Method::POST, &action, dump).await;
    assert!(code == 400 && after.to_string().contains("crash dump is not supported"), "{after}");
    assert_ne!(before, after, "2.16 does not know the action; 2.17 refuses it for what it is");
    t.shutdown().await;
}

#[tokio::test]
async fn servers_are_tagged_from_2_26_and_their_lists_filter_by_tags() {
    let t = TestCloud::start().await;
    let member = t.user_with_role("member").await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(boot_active(&member, name).await["id"].as_str().unwrap().to_string());
    }
    let tags = |id: &str| format!("/compute/v2.1/servers/{id}/tags");
    let (code, _, _) = at(&t, &member, "2.25", Method::GET, &tags(&ids[0]), None).await;
    assert_eq!(code, 404, "the tags API is 2.26's");
    let (code, _, body) =
        at(&t, &member, "2.26", Method::PUT, &tags(&ids[0]), Some(json!({"tags": ["web", "prod"]}))).await;
    assert_eq!((code, body["tags"].clone()), (200, json!(["web", "prod"])));
    let one = |id: &str, tag: &str| format!("/compute/v2.1/servers/{id}/tags/{tag}");
    let (code, _, _) = at(&t, &member, "2.26", Method::PUT, &one(&ids[1], "web"), None).await;
    assert_eq!(code, 201, "a new tag");
    let (code, _, _) = at(&t, &member, "2.26", Method::PUT, &one(&ids[1], "web"), None).await;
    assert_eq!(code, 204, "a tag it has");
    let (code, _, _) = at(&t, &member, "2.26", Method::GET, &one(&ids[1], "web"), None).await;
    assert_eq!(code, 204);
    let (code, _, _) = at(&t, &member, "2.26", Method::GET, &one(&ids[1], "prod"), None).await;
    assert_eq!(code, 404);
    let (code, _, _) = at(&t, &member, "2.26", Method::PUT, &tags(&ids[2]), Some(json!({"tags": ["db"]}))).await;
    assert_eq!(code, 200);

    let names = |body: &Value| -> BTreeSet<String> {
        body["servers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
    };
    for (query, expected) in [
        ("tags=web,prod", vec!["a"]),
        ("tags=web", vec!["a", "b"]),
        ("tags-any=prod,db", vec!["a", "c"]),
        ("not-tags=web,prod", vec!["b", "c"]),
        ("not-tags-any=web", vec!["c"]),
    ] {
        let (code, _, body) =
            at(&t, &member, "2.26", Method::GET, &format!("/compute/v2.1/servers?{query}"), None).await;
        assert_eq!(code, 200, "{query}: {body}");
        assert_eq!(names(&body), expected.iter().map(|s| s.to_string()).collect(), "{query}");
    }
    let (code, _, _) = at(&t, &member, "2.25", Method::GET, "/compute/v2.1/servers?tags=web", None).await;
    assert_eq!(code, 400, "a 2.26 filter at 2.25 is refused, not ignored");
    let (_, _, shown) = at(&t, &member, "2.26", Method::GET, &format!("/compute/v2.1/servers/{}", ids[0]), None).await;
    assert_eq!(shown["server"]["tags"], json!(["web", "prod"]));

    for (body, why) in [
        (json!({"tags": ["a/b"]}), "a slash"),
        (json!({"tags": ["x".repeat(61)]}), "too long"),
        (json!({"tags": (0..51).map(|n| format!("t{n}")).collect::<Vec<_>>()}), "too many"),
    ] {
        let (code, _, answer) = at(&t, &member, "2.26", Method::PUT, &tags(&ids[0]), Some(body)).await;
        assert_eq!(code, 400, "{why}: {answer}");
    }
    let (code, _, _) = at(&t, &member, "2.26", Method::DELETE, &one(&ids[0], "web"), None).await;
    assert_eq!(code, 204);
    let (code, _, _) = at(&t, &member, "2.26", Method::DELETE, &one(&ids[0], "web"), None).await;
    assert_eq!(code, 404);
    let (code, _, _) = at(&t, &member, "2.26", Method::DELETE, &tags(&ids[0]), None).await;
    assert_eq!(code, 204);
    let (_, _, left) = at(&t, &member, "2.26", Method::GET, &tags(&ids[0]), None).await;
    assert_eq!(left["tags"], json!([]));
    t.shutdown().await;
}

#[tokio::test]
async fn the_later_steps_page_hypervisors_and_key_pairs_tag_nics_and_drop_the_proxies() {
    let t = TestCloud::start().await;
    // 2.28: cpu_info becomes an object.
    let (_, _, old) = at(&t, &t.admin, "2.27", Method::GET, "/compute/v2.1/os-hypervisors/detail", None).await;
    let (_, _, new) = at(&t, &t.admin, "2.28", Method::GET, "/compute/v2.1/os-hypervisors/detail", None).await;
    assert!(old["hypervisors"][0]["cpu_info"].is_string() && new["hypervisors"][0]["cpu_info"].is_object(), "{new}");

    // 2.33: hypervisors by pages.
    let (code, _, _) = at(&t, &t.admin, "2.32", Method::GET, "/compute/v2.1/os-hypervisors?limit=2", None).await;
    assert_eq!(code, 400);
    let (_, _, all) = at(&t, &t.admin, "2.33", Method::GET, "/compute/v2.1/os-hypervisors", None).await;
    let all: Vec<Value> = all["hypervisors"].as_array().unwrap().iter().map(|h| h["id"].clone()).collect();
    let (_, _, first) = at(&t, &t.admin, "2.33", Method::GET, "/compute/v2.1/os-hypervisors?limit=2", None).await;
    let page: Vec<Value> = first["hypervisors"].as_array().unwrap().iter().map(|h| h["id"].clone()).collect();
    assert_eq!(page, all[..2]);
    let next = first["hypervisors_links"][0]["href"].as_str().expect("a next link");
    let path = next.split_once("/compute/").map(|(_, p)| format!("/compute/{p}")).unwrap();
    let (_, _, second) = at(&t, &t.admin, "2.33", Method::GET, &path, None).await;
    let page: Vec<Value> = second["hypervisors"].as_array().unwrap().iter().map(|h| h["id"].clone()).collect();
    assert_eq!(page, all[2..4.min(all.len())]);

    // 2.35: key pairs by pages, by name.
    for name in ["k1", "k2", "k3"] {
        t.admin.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": name}})).await.unwrap();
    }
    let kp = "/compute/v2.1/os-keypairs";
    let (code, _, _) = at(&t, &t.admin, "2.34", Method::GET, &format!("{kp}?limit=1"), None).await;
    assert_eq!(code, 400);
    let (_, _, first) = at(&t, &t.admin, "2.35", Method::GET, &format!("{kp}?limit=2"), None).await;
    let listed: Vec<&str> =
        first["keypairs"].as_array().unwrap().iter().map(|k| k["keypair"]["name"].as_str().unwrap()).collect();
    assert_eq!(listed, ["k1", "k2"]);
    assert!(first["keypairs_links"][0]["href"].as_str().unwrap().contains("marker=k2"), "{first}");
    let (_, _, rest) = at(&t, &t.admin, "2.35", Method::GET, &format!("{kp}?marker=k2"), None).await;
    assert_eq!(rest["keypairs"].as_array().unwrap().len(), 1);

    // 2.32: a requested network's device tag, which the metadata service tells the guest.
    let image = default_image(&t.admin).await;
    let private = t.admin.get("/network/v2.0/networks?name=private").await.unwrap()["networks"][0]["id"].clone();
    let tagged = json!({"server": {"name": "tagged", "imageRef": image, "flavorRef": "1",
                                   "networks": [{"uuid": private, "tag": "frontend"}]}});
    let (code, _, body) = at(&t, &t.admin, "2.31", Method::POST, "/compute/v2.1/servers", Some(tagged.clone())).await;
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = at(&t, &t.admin, "2.32", Method::POST, "/compute/v2.1/servers", Some(tagged)).await;
    assert_eq!(code, 202, "{body}");
    let id = body["server"]["id"].as_str().unwrap().to_string();
    let vm = wait_for_status(&t.admin, &id, "ACTIVE").await;
    // The guest asks the metadata service at its gateway, from its address.
    let address: std::net::Ipv4Addr = fixed_addresses(&vm)[0].parse().unwrap();
    let gateway = std::net::Ipv4Addr::new(10, 0, 0, 1);
    let document =
        nimbus_actors::app::metadata::answer(&t.cloud.app, gateway, address, "/openstack/latest/meta_data.json")
            .expect("the instance's metadata");
    let meta: Value = serde_json::from_slice(&document.body).unwrap();
    let mac = vm["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"].clone();
    assert_eq!(meta["devices"], json!([{"type": "nic", "mac": mac, "tags": ["frontend"]}]), "{meta}");

    // 2.36: the proxy APIs are gone, and the network quotas with them.
    for path in ["/compute/v2.1/os-networks", "/compute/v2.1/os-floating-ip-pools", "/compute/v2.1/os-security-groups"]
    {
        let (code, _, _) = at(&t, &t.admin, "2.35", Method::GET, path, None).await;
        assert_eq!(code, 200, "{path} at 2.35");
        let (code, _, body) = at(&t, &t.admin, "2.36", Method::GET, path, None).await;
        assert_eq!(code, 404, "{path} at 2.36: {body}");
    }
    let project = t.admin.get("/identity/v3/projects?name=admin").await.unwrap()["projects"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let quota = format!("/compute/v2.1/os-quota-sets/{project}");
    let (_, _, old) = at(&t, &t.admin, "2.35", Method::GET, &quota, None).await;
    let (_, _, new) = at(&t, &t.admin, "2.36", Method::GET, &quota, None).await;
    let gone: BTreeSet<String> = keys(&old["quota_set"]).difference(&keys(&new["quota_set"])).cloned().collect();
    assert_eq!(gone, set(&["fixed_ips", "floating_ips", "security_groups", "security_group_rules"]));
    assert!(keys(&new["quota_set"]).is_subset(&keys(&old["quota_set"])));
    let (code, _, _) =
        at(&t, &t.admin, "2.36", Method::PUT, &quota, Some(json!({"quota_set": {"floating_ips": 5}}))).await;
    assert_eq!(code, 400);
    t.shutdown().await;
}

#[tokio::test]
async fn disabled_and_forced_down_services_get_no_instances() {
    let t = TestCloud::start().await;
    let (_, _, listed) = at(&t, &t.admin, "2.11", Method::GET, "/compute/v2.1/os-services", None).await;
    let hosts: Vec<String> =
        listed["services"].as_array().unwrap().iter().map(|s| s["host"].as_str().unwrap().to_string()).collect();
    assert_eq!(hosts.len(), 4);
    let put = |action: &'static str, body: Value, version: &'static str| {
        let t = &t;
        async move {
            at(t, &t.admin, version, Method::PUT, &format!("/compute/v2.1/os-services/{action}"), Some(body)).await
        }
    };
    for host in &hosts[..2] {
        let (code, _, body) = put("disable", json!({"host": host, "binary": "nova-compute"}), "2.1").await;
        assert_eq!((code, body["service"]["status"].as_str()), (200, Some("disabled")), "{body}");
    }
    let reason = json!({"host": hosts[2], "binary": "nova-compute", "disabled_reason": "maintenance"});
    let (code, _, body) = put("disable-log-reason", reason, "2.1").await;
    assert_eq!((code, body["service"]["disabled_reason"].as_str()), (200, Some("maintenance")), "{body}");
    let vm = boot_active(&t.admin, "on-the-last").await;
    assert_eq!(vm["OS-EXT-SRV-ATTR:host"], hosts[3].as_str(), "the one enabled host takes it");

    // 2.11: forcing the last one down leaves no host; a force-down at 2.10 is no API.
    let down = json!({"host": hosts[3], "binary": "nova-compute", "forced_down": true});
    let (code, _, _) = put("force-down", down.clone(), "2.10").await;
    assert_eq!(code, 404);
    let (code, _, body) = put("force-down", down, "2.11").await;
    assert_eq!((code, body["service"]["forced_down"].as_bool()), (200, Some(true)), "{body}");
    let (_, _, listed) = at(&t, &t.admin, "2.11", Method::GET, "/compute/v2.1/os-services", None).await;
    let last = listed["services"].as_array().unwrap().iter().find(|s| s["host"] == hosts[3].as_str()).unwrap().clone();
    assert_eq!((last["state"].as_str(), last["forced_down"].as_bool()), (Some("down"), Some(true)), "{last}");
    let id = create_server(&t.admin, "nowhere").await;
    let failed = wait_for_status(&t.admin, &id, "ERROR").await;
    assert!(failed["fault"]["message"].as_str().unwrap().contains("No valid host"), "{failed}");

    let up = json!({"host": hosts[3], "binary": "nova-compute", "forced_down": false});
    assert_eq!(put("force-down", up, "2.11").await.0, 200);
    let (code, _, body) = put("enable", json!({"host": hosts[0], "binary": "nova-compute"}), "2.1").await;
    assert_eq!((code, body["service"]["status"].as_str()), (200, Some("enabled")));
    boot_active(&t.admin, "placed-again").await;
    for (body, code) in [
        (json!({"host": "nohost", "binary": "nova-compute"}), 404),
        (json!({"host": hosts[0], "binary": "nova-scheduler"}), 404),
        (json!({"host": hosts[0], "binary": "nova-compute", "disabled_reason": "x"}), 400),
    ] {
        assert_eq!(put("disable", body.clone(), "2.11").await.0, code, "{body}");
    }
    let member = t.user_with_role("member").await;
    let (code, _, _) = at(
        &t,
        &member,
        "2.11",
        Method::PUT,
        "/compute/v2.1/os-services/disable",
        Some(json!({"host": hosts[0], "binary": "nova-compute"})),
    )
    .await;
    assert_eq!(code, 403);
    t.shutdown().await;
}
