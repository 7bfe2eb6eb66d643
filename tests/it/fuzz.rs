//! A seeded HTTP fuzz of the whole API: every route, with mutated bodies, headers, methods, path parameters
//! and query strings, as an admin, a member, a stranger and nobody. Nothing may answer 5xx, hang or panic
//! (a panicking handler answers 500), and the cloud answers normally afterwards.
//!
//! The member's password is never proven here, so its token lives long enough to reach deep into the API.
//! `NIMBUS_FUZZ_REQUESTS` (default 3000) sets how many requests; `NIMBUS_FUZZ_SEED` replays a run (the seed
//! is printed with any failure).

use std::time::Duration;

use nimbus_tests::{TestCloud, create_server, default_image, new_project, new_user_on, wait_for_status};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

/// Every route, with a body that is valid for it (or `Null`).
fn routes() -> Vec<(Method, &'static str, Value)> {
    let server = json!({"server": {"name": "fz", "imageRef": "{image}", "flavorRef": "1", "networks": "auto",
        "min_count": 1, "max_count": 2, "key_name": null, "security_groups": [{"name": "default"}],
        "user_data": "IyEvYmluL3NoCg=="}});
    let login = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "{user_name}",
        "domain": {"name": "Default"}, "password": "pw"}}}, "scope": {"project": {"id": "{project}"}}}});
    vec![
        (Method::GET, "/identity", Value::Null),
        (Method::GET, "/identity/v3", Value::Null),
        (Method::POST, "/identity/v3/auth/tokens", login),
        (Method::GET, "/identity/v3/auth/tokens", Value::Null),
        (Method::GET, "/identity/v3/projects", Value::Null),
        (Method::POST, "/identity/v3/projects", json!({"project": {"name": "fz-p", "network_mode": "vlan"}})),
        (Method::GET, "/identity/v3/users", Value::Null),
        (
            Method::POST,
            "/identity/v3/users",
            json!({"user": {"name": "fz-u", "password": "pw", "default_project_id": "{project}"}}),
        ),
        (Method::GET, "/identity/v3/users/{user}", Value::Null),
        (Method::PATCH, "/identity/v3/users/{user}", json!({"user": {"name": "fz-renamed", "enabled": true}})),
        (
            Method::POST,
            "/identity/v3/users/{user}/password",
            json!({"user": {"password": "pw2", "original_password": "not-it"}}),
        ),
        (Method::GET, "/identity/v3/roles", Value::Null),
        (Method::PUT, "/identity/v3/projects/{project}/users/{user}/roles/member", Value::Null),
        (Method::DELETE, "/identity/v3/projects/{project}/users/{user}/roles/reader", Value::Null),
        (Method::GET, "/compute/", Value::Null),
        (Method::GET, "/compute/v2.1", Value::Null),
        (Method::GET, "/compute/v2.1/flavors", Value::Null),
        (Method::GET, "/compute/v2.1/flavors/detail", Value::Null),
        (Method::GET, "/compute/v2.1/flavors/{flavor}", Value::Null),
        (Method::GET, "/compute/v2.1/servers", Value::Null),
        (Method::POST, "/compute/v2.1/servers", server),
        (Method::GET, "/compute/v2.1/servers/detail", Value::Null),
        (Method::GET, "/compute/v2.1/servers/{server}", Value::Null),
        (Method::PUT, "/compute/v2.1/servers/{server}", json!({"server": {"name": "fz-renamed"}})),
        (Method::POST, "/compute/v2.1/servers/{server}/metadata", json!({"metadata": {"k": "v"}})),
        (Method::PUT, "/compute/v2.1/servers/{server}/metadata/k", json!({"meta": {"k": "w"}})),
        (Method::DELETE, "/compute/v2.1/servers/{server}/metadata/k", Value::Null),
        (Method::DELETE, "/compute/v2.1/servers/{server}", Value::Null),
        (Method::POST, "/compute/v2.1/servers/{server}/action", json!({"addFloatingIp": {"address": "{address}"}})),
        (Method::POST, "/compute/v2.1/servers/{server}/action", json!({"removeFloatingIp": {"address": "{address}"}})),
        (Method::POST, "/compute/v2.1/servers/{server}/action", json!({"os-getConsoleOutput": {"length": 10}})),
        (Method::GET, "/compute/v2.1/os-hypervisors", Value::Null),
        (Method::GET, "/compute/v2.1/os-hypervisors/detail", Value::Null),
        (Method::GET, "/compute/v2.1/os-services", Value::Null),
        (Method::GET, "/compute/v2.1/os-networks", Value::Null),
        (
            Method::POST,
            "/compute/v2.1/os-networks",
            json!({"network": {"label": "fz-n", "cidr": "10.77.0.0/24", "mode": "flat_dhcp"}}),
        ),
        (Method::POST, "/compute/v2.1/os-networks/add", json!({"id": "{network}"})),
        (Method::GET, "/compute/v2.1/os-networks/{network}", Value::Null),
        (Method::DELETE, "/compute/v2.1/os-networks/{network}", Value::Null),
        (Method::POST, "/compute/v2.1/os-networks/{network}/action", json!({"disassociate": null})),
        (Method::GET, "/compute/v2.1/os-floating-ip-pools", Value::Null),
        (
            Method::POST,
            "/compute/v2.1/os-floating-ips-bulk",
            json!({"floating_ips_bulk_create": {"ip_range": "198.51.100.0/28", "pool": "fz"}}),
        ),
        (Method::GET, "/compute/v2.1/os-floating-ips", Value::Null),
        (Method::POST, "/compute/v2.1/os-floating-ips", json!({"pool": "public"})),
        (Method::GET, "/compute/v2.1/os-floating-ips/{floating}", Value::Null),
        (Method::DELETE, "/compute/v2.1/os-floating-ips/{floating}", Value::Null),
        (Method::GET, "/compute/v2.1/os-fixed-ips/{fixed}", Value::Null),
        (Method::POST, "/compute/v2.1/os-fixed-ips/{fixed}/action", json!({"reserve": null})),
        (Method::GET, "/compute/v2.1/os-quota-sets/{project}", Value::Null),
        (Method::PUT, "/compute/v2.1/os-quota-sets/{project}", json!({"quota_set": {"instances": 5, "cores": -1}})),
        (Method::GET, "/compute/v2.1/os-quota-sets/{project}/detail", Value::Null),
        (Method::GET, "/network/v2.0/security-groups", Value::Null),
        (
            Method::POST,
            "/network/v2.0/security-groups",
            json!({"security_group": {"name": "fz-sg", "description": "d"}}),
        ),
        (
            Method::POST,
            "/network/v2.0/security-group-rules",
            json!({"security_group_rule": {"security_group_id": "{garbage}", "direction": "ingress", "protocol": "tcp",
                "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}}),
        ),
        (Method::GET, "/network/v2.0/security-group-rules", Value::Null),
        (Method::GET, "/compute/v2.1/os-security-groups", Value::Null),
        (
            Method::POST,
            "/compute/v2.1/os-security-groups",
            json!({"security_group": {"name": "fz-nsg", "description": "d"}}),
        ),
        (
            Method::POST,
            "/compute/v2.1/os-security-group-rules",
            json!({"security_group_rule": {"parent_group_id": "{garbage}", "ip_protocol": "icmp", "from_port": -1, "to_port": -1}}),
        ),
        (Method::POST, "/compute/v2.1/servers/{server}/action", json!({"addSecurityGroup": {"name": "default"}})),
        (Method::GET, "/compute/v2.1/servers/{server}/os-security-groups", Value::Null),
        (Method::GET, "/compute/v2.1/os-keypairs", Value::Null),
        (Method::POST, "/compute/v2.1/os-keypairs", json!({"keypair": {"name": "fz-key"}})),
        (
            Method::POST,
            "/compute/v2.1/os-keypairs",
            json!({"keypair": {"name": "fz-imp", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPBefgBEwFmamFM1wrSTgBJ4uGdS8OnEPjgXqZchC+CQ"}}),
        ),
        (Method::GET, "/compute/v2.1/os-keypairs/fz-key", Value::Null),
        (Method::DELETE, "/compute/v2.1/os-keypairs/fz-key", Value::Null),
        (Method::GET, "/image", Value::Null),
        (Method::GET, "/image/v2/images", Value::Null),
        (
            Method::POST,
            "/image/v2/images",
            json!({"name": "fz-img", "disk_format": "qcow2", "container_format": "bare", "visibility": "private"}),
        ),
        (Method::GET, "/image/v2/images/{image}", Value::Null),
        (Method::GET, "/network", Value::Null),
        (Method::GET, "/network/v2.0/networks", Value::Null),
        (Method::GET, "/network/v2.0/networks/{network}", Value::Null),
        (Method::GET, "/network/v2.0/subnets", Value::Null),
        (Method::GET, "/network/v2.0/subnets/{network}", Value::Null),
        (Method::GET, "/network/v2.0/ports", Value::Null),
        (Method::GET, "/network/v2.0/ports/{server}", Value::Null),
        (Method::GET, "/network/v2.0/extensions", Value::Null),
        (Method::GET, "/network/v2.0/networks?fields=id&name=private&sort_key=name&limit=1", Value::Null),
        (Method::POST, "/network/v2.0/networks", json!({"network": {"name": "fz-net", "shared": false}})),
        (Method::POST, "/network/v2.0/networks", json!({"networks": [{"name": "fz-a"}, {"name": "fz-b"}]})),
        (Method::PUT, "/network/v2.0/networks/{network}", json!({"network": {"name": "fz-renamed"}})),
        (Method::DELETE, "/network/v2.0/networks/{network}", Value::Null),
        (
            Method::POST,
            "/network/v2.0/subnets",
            json!({"subnet": {"network_id": "{network}", "cidr": "10.78.0.0/24", "ip_version": 4, "gateway_ip": "10.78.0.1",
                "dns_nameservers": ["192.0.2.53"], "allocation_pools": [{"start": "10.78.0.10", "end": "10.78.0.20"}]}}),
        ),
        (Method::PUT, "/network/v2.0/subnets/{network}", json!({"subnet": {"name": "fz-sub"}})),
        (Method::DELETE, "/network/v2.0/subnets/{network}", Value::Null),
        (
            Method::POST,
            "/network/v2.0/ports",
            json!({"port": {"network_id": "{network}", "name": "fz-port", "fixed_ips": [{"ip_address": "{fixed}"}]}}),
        ),
        (Method::PUT, "/network/v2.0/ports/{server}", json!({"port": {"name": "fz-port"}})),
        (Method::DELETE, "/network/v2.0/ports/{server}", Value::Null),
        (
            Method::POST,
            "/compute/v2.1/servers",
            json!({"server": {"name": "fz-nics", "imageRef": "{image}", "flavorRef": "1",
                "networks": [{"uuid": "{network}", "fixed_ip": "{fixed}"}, {"port": "{server}"}]}}),
        ),
        (Method::GET, "/network/v2.0/floatingips", Value::Null),
        (
            Method::POST,
            "/network/v2.0/floatingips",
            json!({"floatingip": {"floating_network_id": "{pool}", "port_id": "{server}"}}),
        ),
        (Method::GET, "/network/v2.0/floatingips/{floating}", Value::Null),
        (Method::PUT, "/network/v2.0/floatingips/{floating}", json!({"floatingip": {"port_id": null}})),
        (Method::DELETE, "/network/v2.0/floatingips/{floating}", Value::Null),
        (Method::GET, "/admin/actors", Value::Null),
        (Method::POST, "/admin/actors/kill", json!({"name": "{garbage}"})),
        (Method::POST, "/admin/actors/stop", json!({"name": "{garbage}"})),
        (Method::GET, "/admin/events", Value::Null),
        (Method::GET, "/admin/cluster", Value::Null),
    ]
}

/// Values that have broken parsers before: wrong types, edges of numbers, odd text.
fn weird(rng: &mut StdRng) -> Value {
    match rng.random_range(0..14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(-9.5e300),
        5 => json!(""),
        6 => json!("x".repeat(rng.random_range(256..5000))),
        7 => json!("../../etc/passwd"),
        8 => json!("ünï\u{0}côdé\u{202e}"),
        9 => json!([]),
        10 => json!({}),
        11 => json!("0.0.0.0/0"),
        12 => json!("255.255.255.255"),
        _ => json!([{"a": [1, {"b": null}]}]),
    }
}

fn mutate(value: &mut Value, rng: &mut StdRng, depth: u32) {
    match value {
        Value::Object(map) if !map.is_empty() && depth < 6 => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys[rng.random_range(0..keys.len())].clone();
            match rng.random_range(0..5) {
                0 => drop(map.remove(&key)),
                1 => drop(map.insert(key, weird(rng))),
                2 => drop(map.insert(format!("unknown_{}", rng.random_range(0..9)), weird(rng))),
                _ => mutate(map.get_mut(&key).expect("a key of the map"), rng, depth + 1),
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 6 => {
            let i = rng.random_range(0..items.len());
            mutate(&mut items[i], rng, depth + 1);
        }
        other => *other = weird(rng),
    }
}

struct Ids {
    values: Vec<(&'static str, String)>,
}

impl Ids {
    fn fill(&self, template: &str, rng: &mut StdRng) -> String {
        let mut text = template.to_string();
        for (name, valid) in &self.values {
            let slot = format!("{{{name}}}");
            while text.contains(&slot) {
                let value = match rng.random_range(0..10) {
                    0 => "00000000-0000-0000-0000-000000000000".to_string(),
                    1 => "%2e%2e%2f".to_string(),
                    2 => "x".repeat(rng.random_range(1..3000)),
                    3 => "-1".to_string(),
                    4 => "%ff%fe".to_string(),
                    _ => valid.clone(),
                };
                text = text.replacen(&slot, &value, 1);
            }
        }
        text
    }
}

fn query(rng: &mut StdRng) -> String {
    const KEYS: [&str; 10] = [
        "limit",
        "marker",
        "all_tenants",
        "name",
        "status",
        "changes-since",
        "fields",
        "sort_key",
        "project_id",
        "%zz",
    ];
    const VALUES: [&str; 9] = ["-1", "0", "99999999999999999999", "", "%00", "true", "2020-13-45", "id", "ACTIVE"];
    let n = rng.random_range(0..4);
    let pairs: Vec<String> = (0..n)
        .map(|_| format!("{}={}", KEYS[rng.random_range(0..KEYS.len())], VALUES[rng.random_range(0..VALUES.len())]))
        .collect();
    if pairs.is_empty() { String::new() } else { format!("?{}", pairs.join("&")) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_gets_a_5xx_hangs_or_panics() {
    let requests: usize = std::env::var("NIMBUS_FUZZ_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    let seed: u64 = std::env::var("NIMBUS_FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(20261202);
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let login = new_user_on(&t.admin, &project, "member").await;
    let member = login.client(t.url()).await;
    let stranger = t.user_with_role("member").await;
    let server = create_server(&member, "fuzzed").await;
    wait_for_status(&member, &server, "ACTIVE").await;
    let floating = member.post("/compute/v2.1/os-floating-ips", &json!({"pool": "public"})).await.unwrap();
    let networks = t.admin.get("/compute/v2.1/os-networks").await.unwrap();
    let pools = t.admin.get("/network/v2.0/networks?router:external=true").await.unwrap();
    let user = t.admin.get("/identity/v3/users").await.unwrap()["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == login.user.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let ids = Ids {
        values: vec![
            ("server", server.clone()),
            ("project", project.clone()),
            ("user", user),
            ("user_name", login.user.clone()),
            ("image", default_image(&member).await),
            ("flavor", "1".into()),
            ("network", text(&networks["networks"][0]["id"])),
            ("pool", text(&pools["networks"][0]["id"])),
            ("floating", text(&floating["floating_ip"]["id"])),
            ("address", text(&floating["floating_ip"]["ip"])),
            ("fixed", "10.0.0.3".into()),
            ("garbage", "no-such-actor".into()),
        ],
    };
    let routes = routes();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let tokens = [
        Some(t.admin.token().to_string()),
        Some(member.token().to_string()),
        Some(stranger.token().to_string()),
        Some("bogus".to_string()),
        None,
    ];
    let methods =
        [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for n in 0..requests {
        let (method, path, body) = &routes[rng.random_range(0..routes.len())];
        let method =
            if rng.random_bool(0.1) { methods[rng.random_range(0..methods.len())].clone() } else { method.clone() };
        let url = format!("{}{}{}", t.url(), ids.fill(path, &mut rng), query(&mut rng));
        let mut request = http.request(method.clone(), &url);
        if let Some(token) = &tokens[rng.random_range(0..tokens.len())] {
            request = request.header("x-auth-token", token);
        }
        if rng.random_bool(0.2) {
            let (name, value) = [
                ("openstack-api-version", "compute 2.99"),
                ("x-openstack-nova-api-version", "latest"),
                ("content-type", "text/plain"),
                ("x-subject-token", "bogus"),
                ("accept", "application/xml"),
            ][rng.random_range(0..5)];
            request = request.header(name, value);
        }
        let mut body = ids.fill(&body.to_string(), &mut rng);
        if !body.is_empty() && body != "null" {
            let mut value: Value = serde_json::from_str(&body).unwrap();
            for _ in 0..rng.random_range(0..4) {
                mutate(&mut value, &mut rng, 0);
            }
            body = value.to_string();
            let mut bytes = body.clone().into_bytes();
            match rng.random_range(0..12) {
                // Cut anywhere, even inside a character: the body is not UTF-8 any more.
                0 => bytes.truncate(rng.random_range(0..bytes.len())),
                1 => bytes = "{\"a\":".repeat(rng.random_range(10..300)).into_bytes(),
                _ => {}
            }
            request = request.header("content-type", "application/json").body(bytes);
        }
        let what = format!("request {n} (seed {seed}): {method} {url} {body:.300}");
        let response = request.send().await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = response.status().as_u16();
        let answer = response.text().await.unwrap_or_default();
        assert!(status < 500, "{what}: {status} {answer:.500}");
        *statuses.entry(status).or_default() += 1;
    }
    eprintln!("fuzz: {requests} requests, seed {seed}, statuses {statuses:?}");
    let (status, _) = t.admin.raw(Method::GET, "/compute/v2.1/servers/detail", None).await.unwrap();
    assert_eq!(status, 200, "the cloud answers normally afterwards");
    assert!(
        statuses.keys().any(|s| (200..300).contains(s)),
        "some requests were valid enough to succeed: {statuses:?}"
    );
    t.shutdown().await;
}
