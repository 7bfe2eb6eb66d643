//! Security groups through both APIs: each project's default group, groups and rules made, checked, renamed
//! and deleted, their quotas, and servers put in them and moved between them.

use nimbus_storage::Reads;
use nimbus_storage::schema::SECURITY_GROUP_MEMBERS;
use nimbus_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

const GROUPS: &str = "/network/v2.0/security-groups";
const RULES: &str = "/network/v2.0/security-group-rules";

async fn groups_of(client: &nimbus::client::Client) -> Vec<Value> {
    client.get(GROUPS).await.unwrap()["security_groups"].as_array().unwrap().clone()
}

fn named<'a>(groups: &'a [Value], name: &str) -> &'a Value {
    groups.iter().find(|g| g["name"] == name).unwrap_or_else(|| panic!("group {name} in {groups:?}"))
}

fn rule(group: &str, extra: Value) -> Value {
    let mut body = json!({"security_group_id": group, "direction": "ingress", "ethertype": "IPv4"});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({ "security_group_rule": body })
}

#[tokio::test]
async fn groups_and_rules_are_made_checked_and_kept_per_project() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let alice = t.user_on(&project, "member").await;
    let eve = t.user_with_role("member").await;

    // Every project has its default group: egress anywhere, ingress from its own members.
    let groups = groups_of(&alice).await;
    assert_eq!(groups.len(), 1, "{groups:?}");
    let default = named(&groups, "default");
    let default_id = default["id"].as_str().unwrap();
    let rules = default["security_group_rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert!(rules.iter().any(|r| r["direction"] == "egress" && r["remote_group_id"].is_null()));
    assert!(rules.iter().any(|r| r["direction"] == "ingress" && r["remote_group_id"] == default_id));

    let (got, web) = status(&alice, Method::POST, GROUPS, Some(json!({"security_group": {"name": "web"}}))).await;
    assert_eq!(got, 201, "{web}");
    let web_id = web["security_group"]["id"].as_str().unwrap().to_string();
    assert_eq!(web["security_group"]["security_group_rules"].as_array().unwrap().len(), 1, "egress anywhere");
    for (body, expected, why) in [
        (json!({"security_group": {"name": "web"}}), 409, "a name the project has"),
        (json!({"security_group": {"name": "default"}}), 409, "the default group's name"),
        (json!({"security_group": {"name": ""}}), 400, "an empty name"),
        (json!({"security_group": {"name": "x", "stateful": false}}), 400, "a stateless group"),
        (json!({"security_group": {"name": "x", "shared": true}}), 400, "an unknown field"),
        (json!({"security_group": {"name": "x", "project_id": admin_project(&t).await}}), 403, "another project"),
    ] {
        let (got, answer) = status(&alice, Method::POST, GROUPS, Some(body)).await;
        assert_eq!(got, expected, "{why}: {answer}");
    }

    let http = rule(
        &web_id,
        json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}),
    );
    let (got, created) = status(&alice, Method::POST, RULES, Some(http.clone())).await;
    assert_eq!(got, 201, "{created}");
    let created = &created["security_group_rule"];
    assert_eq!((created["protocol"].as_str(), created["port_range_min"].as_u64()), (Some("tcp"), Some(80)));
    let rule_id = created["id"].as_str().unwrap().to_string();
    let eves_group = named(&groups_of(&eve).await, "default")["id"].as_str().unwrap().to_string();
    for (body, expected, why) in [
        (http.clone(), 409, "the same traffic again"),
        (rule(&web_id, json!({"ethertype": "IPv6"})), 400, "IPv6"),
        (rule(&web_id, json!({"protocol": "gre"})), 400, "an unsupported protocol"),
        (rule(&web_id, json!({"port_range_min": 22})), 400, "a port without a protocol"),
        (
            rule(&web_id, json!({"protocol": "tcp", "port_range_min": 90, "port_range_max": 80})),
            400,
            "a reversed range",
        ),
        (rule(&web_id, json!({"remote_group_id": eves_group})), 400, "another project's group as the remote"),
        (rule(&web_id, json!({"remote_ip_prefix": "not-a-cidr"})), 400, "a bad prefix"),
        (rule(&eves_group, json!({"protocol": "icmp"})), 404, "another project's group"),
        (rule("nonsense", json!({})), 404, "no such group"),
    ] {
        let (got, answer) = status(&alice, Method::POST, RULES, Some(body)).await;
        assert_eq!(got, expected, "{why}: {answer}");
    }
    let icmp = rule(&web_id, json!({"protocol": "icmp", "remote_group_id": default_id}));
    alice.post(RULES, &icmp).await.unwrap();

    let listed = alice.get(&format!("{RULES}?security_group_id={web_id}")).await.unwrap();
    assert_eq!(listed["security_group_rules"].as_array().unwrap().len(), 3, "{listed}");
    let (got, _) = status(&alice, Method::GET, &format!("{RULES}?colour=blue"), None).await;
    assert_eq!(got, 400, "an unknown filter is refused, not ignored");
    let shown = alice.get(&format!("{RULES}/{rule_id}")).await.unwrap();
    assert_eq!(shown["security_group_rule"]["security_group_id"], web_id.as_str());
    let only = alice.get(&format!("{GROUPS}?name=web&fields=id,name")).await.unwrap();
    assert_eq!(only["security_groups"], json!([{"id": web_id, "name": "web"}]));

    // Another project sees none of it.
    assert_eq!(status(&eve, Method::GET, &format!("{GROUPS}/{web_id}"), None).await.0, 404);
    assert_eq!(status(&eve, Method::GET, &format!("{RULES}/{rule_id}"), None).await.0, 404);
    assert_eq!(status(&eve, Method::DELETE, &format!("{GROUPS}/{web_id}"), None).await.0, 404);
    assert!(groups_of(&eve).await.iter().all(|g| g["name"] == "default"));

    let renamed = json!({"security_group": {"name": "www", "description": "public web"}});
    let (got, answer) = status(&alice, Method::PUT, &format!("{GROUPS}/{web_id}"), Some(renamed)).await;
    assert_eq!((got, answer["security_group"]["name"].as_str()), (200, Some("www")));
    let take_default = json!({"security_group": {"name": "default"}});
    assert_eq!(status(&alice, Method::PUT, &format!("{GROUPS}/{web_id}"), Some(take_default)).await.0, 409);
    let rename_default = json!({"security_group": {"name": "other"}});
    assert_eq!(status(&alice, Method::PUT, &format!("{GROUPS}/{default_id}"), Some(rename_default)).await.0, 409);
    assert_eq!(
        status(&alice, Method::DELETE, &format!("{GROUPS}/{default_id}"), None).await.0,
        409,
        "Neutron keeps the default group with a 409"
    );

    // Quotas: groups per project, rules per group.
    let quota = format!("/compute/v2.1/os-quota-sets/{project}");
    let limits = json!({"quota_set": {"security_groups": 2, "security_group_rules": 3}});
    assert_eq!(status(&t.admin, Method::PUT, &quota, Some(limits)).await.0, 200);
    let shown = t.admin.get(&format!("{quota}/detail")).await.unwrap();
    assert_eq!(shown["quota_set"]["security_groups"], json!({"limit": 2, "in_use": 2, "reserved": 0}));
    let (got, answer) = status(&alice, Method::POST, GROUPS, Some(json!({"security_group": {"name": "third"}}))).await;
    assert_eq!(got, 409, "over the group quota: {answer}");
    let (got, answer) = status(&alice, Method::POST, RULES, Some(rule(&web_id, json!({"protocol": "udp"})))).await;
    assert_eq!(got, 409, "over the rule quota: {answer}");

    assert_eq!(status(&alice, Method::DELETE, &format!("{RULES}/{rule_id}"), None).await.0, 204);
    assert_eq!(status(&alice, Method::GET, &format!("{RULES}/{rule_id}"), None).await.0, 404);
    assert_eq!(status(&alice, Method::DELETE, &format!("{GROUPS}/{web_id}"), None).await.0, 204);
    assert_eq!(groups_of(&alice).await.len(), 1);
    t.shutdown().await;
}

#[tokio::test]
async fn servers_are_put_in_groups_and_moved_between_them() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let bob = t.user_on(&project, "member").await;
    let web = bob.post(GROUPS, &json!({"security_group": {"name": "web"}})).await.unwrap();
    let web_id = web["security_group"]["id"].as_str().unwrap().to_string();
    let image = default_image(&bob).await;
    let server = |groups: Value| json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "1", "security_groups": groups}});

    let (got, answer) =
        status(&bob, Method::POST, "/compute/v2.1/servers", Some(server(json!([{"name": "nope"}])))).await;
    assert_eq!(got, 400, "an unknown group: {answer}");
    let created = bob.post("/compute/v2.1/servers", &server(json!([{"name": "web"}]))).await.unwrap();
    assert_eq!(created["server"]["security_groups"], json!([{"name": "web"}]));
    let id = created["server"]["id"].as_str().unwrap().to_string();
    let shown = wait_for_status(&bob, &id, "ACTIVE").await;
    assert_eq!(shown["security_groups"], json!([{"name": "web"}]));
    let ports = bob.get(&format!("/network/v2.0/ports?device_id={id}")).await.unwrap();
    assert_eq!(ports["ports"][0]["security_groups"], json!([web_id]));
    let plain = bob
        .post("/compute/v2.1/servers", &json!({"server": {"name": "plain", "imageRef": image, "flavorRef": "1"}}))
        .await
        .unwrap();
    let plain = plain["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_for_status(&bob, &plain, "ACTIVE").await["security_groups"], json!([{"name": "default"}]));

    let (got, answer) = status(&bob, Method::DELETE, &format!("{GROUPS}/{web_id}"), None).await;
    assert_eq!(got, 409, "a group in use: {answer}");
    let action = format!("/compute/v2.1/servers/{id}/action");
    let add = |name: &str| json!({"addSecurityGroup": {"name": name}});
    let remove = |name: &str| json!({"removeSecurityGroup": {"name": name}});
    assert_eq!(status(&bob, Method::POST, &action, Some(add("default"))).await.0, 202);
    assert_eq!(status(&bob, Method::POST, &action, Some(add("default"))).await.0, 400, "already in it");
    assert_eq!(status(&bob, Method::POST, &action, Some(add("nope"))).await.0, 404);
    let names =
        |v: &Value| v["security_groups"].as_array().unwrap().iter().map(|g| g["name"].clone()).collect::<Vec<_>>();
    assert_eq!(names(&server_of(&bob, &id).await), vec!["web", "default"]);
    assert_eq!(status(&bob, Method::POST, &action, Some(remove("web"))).await.0, 202);
    assert_eq!(status(&bob, Method::POST, &action, Some(remove("web"))).await.0, 400, "not in it");
    let listed = bob.get(&format!("/compute/v2.1/servers/{id}/os-security-groups")).await.unwrap();
    assert_eq!(names(&listed), vec!["default"]);
    assert_eq!(status(&bob, Method::DELETE, &format!("{GROUPS}/{web_id}"), None).await.0, 204, "no longer in use");

    for server in [&id, &plain] {
        bob.delete(&format!("/compute/v2.1/servers/{server}")).await.unwrap();
        wait_for_gone(&bob, server).await;
    }
    let members = t.cloud.store.read(|r| r.scan(&SECURITY_GROUP_MEMBERS)).unwrap();
    assert!(members.is_empty(), "deleted servers leave their groups: {} left", members.len());
    t.shutdown().await;
}

#[tokio::test]
async fn nova_s_security_group_api_drives_the_same_groups() {
    let t = TestCloud::start().await;
    let carol = t.user_with_role("member").await;
    let groups = "/compute/v2.1/os-security-groups";
    let listed = carol.get(groups).await.unwrap();
    let default = &listed["security_groups"][0];
    assert_eq!(default["name"], "default");
    assert_eq!(default["rules"][0]["group"]["name"], "default", "nova shows the ingress rule by its remote group");

    let created =
        carol.post(groups, &json!({"security_group": {"name": "ssh", "description": "shell"}})).await.unwrap();
    let id = created["security_group"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["security_group"]["rules"], json!([]), "nova shows no egress rules");
    let again = json!({"security_group": {"name": "ssh", "description": "again"}});
    assert_eq!(status(&carol, Method::POST, groups, Some(again)).await.0, 400, "nova answers a taken name with a 400");
    let default_id = default["id"].as_str().unwrap();
    assert_eq!(
        status(&carol, Method::DELETE, &format!("{groups}/{default_id}"), None).await.0,
        400,
        "and keeps default so"
    );
    let rules = "/compute/v2.1/os-security-group-rules";
    let ssh = json!({"security_group_rule": {"parent_group_id": id, "ip_protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "10.0.0.0/8"}});
    let rule = carol.post(rules, &ssh).await.unwrap();
    let rule = &rule["security_group_rule"];
    assert_eq!((rule["from_port"].as_i64(), rule["to_port"].as_i64()), (Some(22), Some(22)));
    assert_eq!(rule["ip_range"]["cidr"], "10.0.0.0/8");
    let ping =
        json!({"security_group_rule": {"parent_group_id": id, "ip_protocol": "icmp", "from_port": -1, "to_port": -1}});
    let ping = carol.post(rules, &ping).await.unwrap();
    assert_eq!(ping["security_group_rule"]["from_port"], -1);
    assert_eq!(ping["security_group_rule"]["ip_range"]["cidr"], "0.0.0.0/0");
    let half = json!({"security_group_rule": {"parent_group_id": id, "ip_protocol": "udp", "from_port": 53}});
    assert_eq!(status(&carol, Method::POST, rules, Some(half)).await.0, 400, "a protocol needs both ports");

    // The same group through the Network API.
    let neutron = carol.get(&format!("{GROUPS}/{id}")).await.unwrap();
    let neutron_rules = neutron["security_group"]["security_group_rules"].as_array().unwrap();
    assert_eq!(neutron_rules.len(), 3, "egress, ssh and icmp: {neutron}");
    let ssh_id = rule["id"].as_str().unwrap();
    assert_eq!(status(&carol, Method::DELETE, &format!("{rules}/{ssh_id}"), None).await.0, 202);
    let shown = carol.get(&format!("{groups}/{id}")).await.unwrap();
    assert_eq!(shown["security_group"]["rules"].as_array().unwrap().len(), 1);
    assert_eq!(status(&carol, Method::DELETE, &format!("{groups}/{id}"), None).await.0, 202);
    assert_eq!(status(&carol, Method::GET, &format!("{groups}/{id}"), None).await.0, 404);
    t.shutdown().await;
}

/// The id of the operator's own project.
async fn admin_project(t: &TestCloud) -> String {
    let projects = t.admin.get("/identity/v3/projects").await.unwrap();
    let admin = projects["projects"].as_array().unwrap().iter().find(|p| p["name"] == "admin").unwrap();
    admin["id"].as_str().unwrap().to_string()
}

async fn server_of(client: &nimbus::client::Client, id: &str) -> Value {
    server(client, id).await.unwrap_or_else(|| panic!("server {id} exists"))
}

/// The firewall `host` enforces, once it satisfies `wanted` (within a second: the publisher's promise).
async fn firewall_when(
    t: &TestCloud,
    host: &nimbus_protocol::ids::HostId,
    wanted: impl Fn(&nimbus_protocol::firewall::HostFirewall) -> bool,
) -> nimbus_protocol::firewall::HostFirewall {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let installed = t.cloud.hypervisors[host].firewall().unwrap_or_default();
        if wanted(&installed) {
            return installed;
        }
        assert!(std::time::Instant::now() < deadline, "{host} still enforces {installed:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn filtering_hosts_get_every_change_of_their_instances_groups_within_a_second() {
    use nimbus_protocol::firewall::{Flow, Peer, Protocol};
    let mut options = Options { hosts: 1, ..Options::default() };
    options.drivers.fake_filtering = true;
    let t = TestCloud::start_with(options).await;
    let dave = t.user_with_role("member").await;
    let web = dave.post(GROUPS, &json!({"security_group": {"name": "web"}})).await.unwrap();
    let web_id = web["security_group"]["id"].as_str().unwrap().to_string();
    let image = default_image(&dave).await;
    let body =
        json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "1", "security_groups": [{"name": "web"}]}});
    let id = dave.post("/compute/v2.1/servers", &body).await.unwrap()["server"]["id"].as_str().unwrap().to_string();
    wait_for_status(&dave, &id, "ACTIVE").await;
    let (host, instance) = (t.cloud.hypervisors.keys().next().unwrap().clone(), id.parse().unwrap());
    let web_group: nimbus_protocol::ids::SecurityGroupId = web_id.parse().unwrap();

    // Placed: the host has its groups, with the egress rule a new group starts with.
    let installed = firewall_when(&t, &host, |f| f.instances.get(&instance) == Some(&vec![web_group])).await;
    let rules = &installed.groups[&web_group];
    assert!(rules.iter().all(|r| r.flow == Flow::Egress && r.peer == Peer::Any), "{rules:?}");

    // A rule added, from the group's own members: the rule arrives with the members' addresses.
    let added = dave
        .post(
            RULES,
            &rule(
                &web_id,
                json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_group_id": web_id}),
            ),
        )
        .await
        .unwrap();
    let installed =
        firewall_when(&t, &host, |f| f.groups[&web_group].iter().any(|r| r.protocol == Some(Protocol::Tcp))).await;
    let address: std::net::Ipv4Addr = fixed_addresses(&server_of(&dave, &id).await)[0].parse().unwrap();
    assert_eq!(installed.members[&web_group], [address].into(), "the group's members");

    // Taken away again, and the server moved to the default group.
    let rule_id = added["security_group_rule"]["id"].as_str().unwrap();
    assert_eq!(status(&dave, Method::DELETE, &format!("{RULES}/{rule_id}"), None).await.0, 204);
    firewall_when(&t, &host, |f| f.groups[&web_group].iter().all(|r| r.protocol.is_none())).await;
    let action = format!("/compute/v2.1/servers/{id}/action");
    assert_eq!(
        status(&dave, Method::POST, &action, Some(json!({"addSecurityGroup": {"name": "default"}}))).await.0,
        202
    );
    assert_eq!(
        status(&dave, Method::POST, &action, Some(json!({"removeSecurityGroup": {"name": "web"}}))).await.0,
        202
    );
    let installed =
        firewall_when(&t, &host, |f| f.instances[&instance].len() == 1 && !f.groups.contains_key(&web_group)).await;
    assert_eq!(installed.members.len(), 1, "the default group lets its own members in: {installed:#?}");

    // Deleted: the host no longer filters for it.
    assert_eq!(status(&dave, Method::DELETE, &format!("/compute/v2.1/servers/{id}"), None).await.0, 204);
    firewall_when(&t, &host, |f| f.instances.is_empty()).await;
    assert!(workload::firewall_mismatches(&t).is_empty());
    t.shutdown().await;
}
