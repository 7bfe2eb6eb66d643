//! The Network API's creates end to end: networks and their subnets (nova-network networks of the project's
//! mode), standalone ports, bulk creates, `fields=`, filters and paging; servers booted with several
//! interfaces (networks, a fixed IP, a port, "none"), what a delete gives back, and the refusals.

use std::collections::BTreeSet;
use std::time::Duration;

use nimbus::client::Client;
use nimbus_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

const NETWORKS: &str = "/network/v2.0/networks";
const SUBNETS: &str = "/network/v2.0/subnets";
const PORTS: &str = "/network/v2.0/ports";

/// Creates a network and its subnet; returns the network's id.
async fn network_with_subnet(client: &Client, name: &str, cidr: &str, dhcp: bool) -> String {
    let network = client.post(NETWORKS, &json!({"network": {"name": name}})).await.unwrap();
    let id = network["network"]["id"].as_str().unwrap().to_string();
    assert_eq!(network["network"]["subnets"], json!([]), "a new network has no subnet yet");
    let subnet = json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4, "name": format!("{name}-sub"),
                                   "enable_dhcp": dhcp}});
    let created = client.post(SUBNETS, &subnet).await.unwrap();
    assert_eq!(created["subnet"]["network_id"], id.as_str());
    assert_eq!(created["subnet"]["name"], format!("{name}-sub"));
    assert_eq!(created["subnet"]["enable_dhcp"], dhcp);
    id
}

async fn boot_with(client: &Client, name: &str, networks: Value) -> (u16, Value) {
    let image = default_image(client).await;
    let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": "1", "networks": networks}});
    status(client, Method::POST, "/compute/v2.1/servers", Some(body)).await
}

/// The server's interfaces in order, as (network id, address, MAC) from its ports.
async fn interfaces(client: &Client, server: &str) -> Vec<(String, String, String)> {
    let ports = client.get(&format!("{PORTS}?device_id={server}")).await.unwrap();
    ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["network_id"].as_str().unwrap().to_string(),
                p["fixed_ips"][0]["ip_address"].as_str().unwrap().to_string(),
                p["mac_address"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_server_gets_one_interface_per_requested_network_and_port_in_order_and_a_port_outlives_it() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let red = network_with_subnet(&alice, "red", "10.20.0.0/24", true).await;
    let blue = network_with_subnet(&alice, "blue", "10.21.0.0/24", false).await;

    // The networks are the project's, of its (flat) mode: FlatDHCP or Flat as enable_dhcp said, each with a
    // bridge of its own, and the network host built them.
    let listed = alice.get(&format!("{NETWORKS}?name=red")).await.unwrap();
    assert_eq!(listed["networks"].as_array().unwrap().len(), 1);
    assert_eq!(listed["networks"][0]["subnets"], json!([red.clone()]));
    assert_eq!(listed["networks"][0]["shared"], false);
    let os_networks = t.admin.get("/compute/v2.1/os-networks").await.unwrap()["networks"].as_array().unwrap().clone();
    let mode = |id: &str| os_networks.iter().find(|n| n["id"] == id).unwrap()["mode"].clone();
    assert_eq!((mode(&red), mode(&blue)), (json!("flat_dhcp"), json!("flat")));
    wait_until("the new networks' segments", Duration::from_secs(5), || async {
        let bridges: BTreeSet<String> = t.cloud.sim().state().segments.values().map(|s| s.bridge.clone()).collect();
        bridges.iter().filter(|b| b.starts_with("brq")).count() == 2
    })
    .await;

    // A port with the address asked for, for a server to take.
    let port = alice
        .post(PORTS, &json!({"port": {"network_id": red, "name": "mine", "fixed_ips": [{"ip_address": "10.20.0.50"}]}}))
        .await
        .unwrap()["port"]
        .clone();
    let port_id = port["id"].as_str().unwrap().to_string();
    assert_eq!((port["status"].clone(), port["device_id"].clone()), (json!("DOWN"), json!("")));
    assert_eq!(port["fixed_ips"][0]["ip_address"], "10.20.0.50");

    let (code, body) = boot_with(
        &alice,
        "multi",
        json!([{"uuid": blue}, {"uuid": red, "fixed_ip": "10.20.0.7"}, {"port": port_id}, {"uuid": red}]),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let id = body["server"]["id"].as_str().unwrap().to_string();
    let server = wait_for_status(&alice, &id, "ACTIVE").await;
    let nics = interfaces(&alice, &id).await;
    assert_eq!(nics.len(), 4, "{nics:?}");
    assert_eq!(nics[0].0, blue, "blue first, as asked");
    assert!(nics[0].1.starts_with("10.21.0."), "{nics:?}");
    assert_eq!((nics[1].0.as_str(), nics[1].1.as_str()), (red.as_str(), "10.20.0.7"));
    assert_eq!((nics[2].1.as_str(), nics[2].2.as_str()), ("10.20.0.50", port["mac_address"].as_str().unwrap()));
    assert!(nics[3].1.starts_with("10.20.0.") && nics[3].1 != "10.20.0.7", "{nics:?}");
    let macs: BTreeSet<_> = nics.iter().map(|n| n.2.clone()).collect();
    assert_eq!(macs.len(), 4, "each interface has its own MAC");
    let mut shown = fixed_addresses(&server);
    shown.sort();
    let mut expected: Vec<String> = nics.iter().map(|n| n.1.clone()).collect();
    expected.sort();
    assert_eq!(shown, expected, "the server lists every address");
    let taken = alice.get(&format!("{PORTS}/{port_id}")).await.unwrap()["port"].clone();
    assert_eq!((taken["status"].clone(), taken["device_id"].clone()), (json!("ACTIVE"), json!(id.clone())));
    assert_eq!(taken["name"], "mine");

    // The DHCP server of red knows its three addresses; the quota counts every address.
    wait_until("red's DHCP hosts", Duration::from_secs(5), || async {
        let state = t.cloud.sim().state();
        let red_hosts: BTreeSet<String> = state
            .segments
            .values()
            .filter(|s| s.network.to_string() == red)
            .flat_map(|s| {
                s.dhcp.clone().into_iter().flat_map(|(_, hosts)| hosts.into_iter().map(|h| h.address.to_string()))
            })
            .collect();
        red_hosts == BTreeSet::from(["10.20.0.7".into(), "10.20.0.50".into(), nics[3].1.clone()])
    })
    .await;
    assert!(store_violations(&t.cloud.store).is_empty(), "{:?}", store_violations(&t.cloud.store));

    // In use, neither the network nor the port can go.
    let (code, body) = status(&alice, Method::DELETE, &format!("{NETWORKS}/{red}"), None).await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = status(&alice, Method::DELETE, &format!("{PORTS}/{port_id}"), None).await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = status(&alice, Method::DELETE, &format!("{SUBNETS}/{red}"), None).await;
    assert_eq!(code, 409, "{body}");

    // The delete frees nova's addresses and gives the port back, with its address and MAC.
    alice.delete(&format!("/compute/v2.1/servers/{id}")).await.unwrap();
    wait_for_gone(&alice, &id).await;
    let back = alice.get(&format!("{PORTS}/{port_id}")).await.unwrap()["port"].clone();
    assert_eq!((back["status"].clone(), back["device_id"].clone()), (json!("DOWN"), json!("")));
    assert_eq!(back["fixed_ips"], port["fixed_ips"]);
    assert_eq!(back["mac_address"], port["mac_address"]);
    let left = alice.get(PORTS).await.unwrap()["ports"].as_array().unwrap().len();
    assert_eq!(left, 1, "only the standalone port is left");
    assert!(store_violations(&t.cloud.store).is_empty(), "{:?}", store_violations(&t.cloud.store));

    // Another server takes the same port.
    let (code, body) = boot_with(&alice, "again", json!([{"port": port_id}])).await;
    assert_eq!(code, 202, "{body}");
    let again = body["server"]["id"].as_str().unwrap().to_string();
    wait_for_status(&alice, &again, "ACTIVE").await;
    assert_eq!(interfaces(&alice, &again).await[0].1, "10.20.0.50");
    alice.delete(&format!("/compute/v2.1/servers/{again}")).await.unwrap();
    wait_for_gone(&alice, &again).await;

    // Unused, the port, the subnet and the networks go; a subnet's delete leaves its network bare.
    alice.delete(&format!("{PORTS}/{port_id}")).await.unwrap();
    alice.delete(&format!("{SUBNETS}/{red}")).await.unwrap();
    let bare = alice.get(&format!("{NETWORKS}/{red}")).await.unwrap()["network"].clone();
    assert_eq!(bare["subnets"], json!([]));
    let (code, _) = status(&alice, Method::GET, &format!("{SUBNETS}/{red}"), None).await;
    assert_eq!(code, 404);
    alice.delete(&format!("{NETWORKS}/{red}")).await.unwrap();
    alice.delete(&format!("{NETWORKS}/{blue}")).await.unwrap();
    let (code, _) = status(&alice, Method::GET, &format!("{NETWORKS}/{blue}"), None).await;
    assert_eq!(code, 404);
    assert!(store_violations(&t.cloud.store).is_empty(), "{:?}", store_violations(&t.cloud.store));
    t.shutdown().await;
}

#[tokio::test]
async fn a_server_asking_for_none_has_no_interface_and_networks_get_their_mtu_and_vlan_segment() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let (code, body) = boot_with(&alice, "offline", json!("none")).await;
    assert_eq!(code, 202, "{body}");
    let id = body["server"]["id"].as_str().unwrap().to_string();
    let server = wait_for_status(&alice, &id, "ACTIVE").await;
    assert!(fixed_addresses(&server).is_empty(), "{server}");
    assert!(interfaces(&alice, &id).await.is_empty());

    // The MTU a network is made with is its segment's, on the network host and in the views.
    let small = alice.post(NETWORKS, &json!({"network": {"name": "small", "mtu": 1400}})).await.unwrap();
    let small = small["network"]["id"].as_str().unwrap().to_string();
    let subnet = json!({"subnet": {"network_id": small, "cidr": "10.31.0.0/24", "ip_version": 4}});
    alice.post(SUBNETS, &subnet).await.unwrap();
    assert_eq!(alice.get(&format!("{NETWORKS}/{small}")).await.unwrap()["network"]["mtu"], 1400);
    wait_until("the small network's segment", Duration::from_secs(5), || async {
        t.cloud.sim().state().segments.values().any(|s| s.network.to_string() == small && s.mtu == Some(1400))
    })
    .await;
    let os_network = t.admin.get(&format!("/compute/v2.1/os-networks/{small}")).await.unwrap();
    assert_eq!(os_network["network"]["mtu"], 1400);

    let vlan = t.user_in_mode("vlan", "member").await;
    let net = network_with_subnet(&vlan, "seg", "10.30.0.0/24", true).await;
    let shown = vlan.get(&format!("{NETWORKS}/{net}")).await.unwrap()["network"].clone();
    assert_eq!(shown["provider:network_type"], "vlan");
    let segment = shown["provider:segmentation_id"].as_u64().expect("a VLAN network has a segment id");
    let (code, body) = status(
        &vlan,
        Method::POST,
        SUBNETS,
        Some(json!({"subnet": {"network_id": net, "cidr": "10.31.0.0/24", "ip_version": 4, "enable_dhcp": false}})),
    )
    .await;
    assert_eq!(code, 409, "one subnet per network: {body}");
    let vm = create_server(&vlan, "on-seg").await;
    let vm = wait_for_status(&vlan, &vm, "ACTIVE").await;
    assert!(fixed_addresses(&vm)[0].starts_with("10.30.0."), "the project's own network is its default: {vm}");
    wait_until("the VLAN segment", Duration::from_secs(5), || async {
        t.cloud.sim().state().segments.values().any(|s| s.vlan.map(u64::from) == Some(segment))
    })
    .await;
    t.shutdown().await;
}

#[tokio::test]
async fn bulk_creates_are_all_or_nothing_and_lists_filter_select_and_page() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let (code, body) = status(
        &alice,
        Method::POST,
        NETWORKS,
        Some(json!({"networks": [{"name": "ok-1"}, {"name": "bad/name\u{7}"}]})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    let names = |v: &Value| -> Vec<String> {
        v["networks"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert!(!names(&alice.get(NETWORKS).await.unwrap()).contains(&"ok-1".to_string()), "nothing of a failed bulk");
    let made =
        alice.post(NETWORKS, &json!({"networks": [{"name": "n1"}, {"name": "n2"}, {"name": "n3"}]})).await.unwrap();
    assert_eq!(names(&made), ["n1", "n2", "n3"]);

    // fields= keeps only the fields asked for; filters on any field; unknown ones are a 400.
    let selected = alice.get(&format!("{NETWORKS}?name=n2&fields=id&fields=name")).await.unwrap();
    let only = selected["networks"].as_array().unwrap();
    assert_eq!(only.len(), 1);
    let keys: BTreeSet<&str> = only[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["id", "name"]));
    let shared = alice.get(&format!("{NETWORKS}?shared=false&router:external=false")).await.unwrap();
    assert!(names(&shared).contains(&"n1".to_string()) && !names(&shared).contains(&"private".to_string()));
    for query in ["colour=red", "fields=colour", "sort_key=colour", "limit=-1"] {
        let (code, body) = status(&alice, Method::GET, &format!("{NETWORKS}?{query}"), None).await;
        assert_eq!(code, 400, "{query}: {body}");
    }

    // Pages of two, sorted by name, linked to the next.
    let first = alice.get(&format!("{NETWORKS}?sort_key=name&sort_dir=asc&limit=2")).await.unwrap();
    let all = names(&alice.get(&format!("{NETWORKS}?sort_key=name&sort_dir=asc")).await.unwrap());
    assert_eq!(names(&first), all[..2]);
    let next = first["networks_links"][0]["href"].as_str().expect("a next link").to_string();
    let path = next.split_once("/network/").map(|(_, p)| format!("/network/{p}")).unwrap();
    let second = alice.get(&path).await.unwrap();
    assert_eq!(names(&second), all[2..4.min(all.len())]);

    // A bulk of ports on one network, then a list filtered by fixed IP.
    let net = network_with_subnet(&alice, "ports", "10.40.0.0/28", true).await;
    let ports = alice
        .post(
            PORTS,
            &json!({"ports": [{"network_id": net}, {"network_id": net, "fixed_ips": [{"ip_address": "10.40.0.9"}]}]}),
        )
        .await
        .unwrap();
    assert_eq!(ports["ports"].as_array().unwrap().len(), 2);
    let found = alice.get(&format!("{PORTS}?fixed_ips=ip_address%3D10.40.0.9")).await.unwrap();
    assert_eq!(found["ports"].as_array().unwrap().len(), 1);
    assert_eq!(found["ports"][0]["fixed_ips"][0]["ip_address"], "10.40.0.9");
    let (code, body) = status(
        &alice,
        Method::POST,
        PORTS,
        Some(json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.40.0.9"}]}})),
    )
    .await;
    assert_eq!(code, 409, "the address is taken: {body}");
    assert!(store_violations(&t.cloud.store).is_empty(), "{:?}", store_violations(&t.cloud.store));
    t.shutdown().await;
}

#[tokio::test]
async fn what_nimbus_cannot_honour_is_refused_with_a_reason() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let bob = t.user_with_role("member").await;
    let bare = alice.post(NETWORKS, &json!({"network": {"name": "bare"}})).await.unwrap()["network"]["id"].clone();
    let net = network_with_subnet(&alice, "net", "10.50.0.0/24", true).await;
    let subnet = |extra: Value| {
        let mut body = json!({"network_id": bare, "cidr": "10.51.0.0/24", "ip_version": 4});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"subnet": body})
    };
    for (path, body, code) in [
        (NETWORKS, json!({"network": {"name": "x", "mtu": 9001}}), 400),
        (NETWORKS, json!({"network": {"name": "x", "dns_domain": "example.org."}}), 400),
        (NETWORKS, json!({"network": {"name": "x", "router:external": true}}), 400),
        (NETWORKS, json!({"network": {"name": "x", "provider:network_type": "vxlan"}}), 400),
        (NETWORKS, json!({"network": {"name": "x", "shared": true}}), 403),
        (NETWORKS, json!({"network": {"name": "x", "admin_state_up": false}}), 400),
        (SUBNETS, subnet(json!({"ip_version": 6, "cidr": "fd00::/64"})), 400),
        (SUBNETS, subnet(json!({"gateway_ip": null})), 400),
        (SUBNETS, subnet(json!({"host_routes": [{"destination": "0.0.0.0/0", "nexthop": "10.51.0.9"}]})), 400),
        (SUBNETS, subnet(json!({"dns_nameservers": ["8.8.8.8", "8.8.4.4", "1.1.1.1"]})), 400),
        (SUBNETS, subnet(json!({"allocation_pools": [{"start": "10.51.0.9", "end": "10.51.0.5"}]})), 400),
        (SUBNETS, subnet(json!({"cidr": "10.51.0.3/24"})), 400),
        (SUBNETS, subnet(json!({"cidr": "10.50.0.0/25"})), 409),
        (SUBNETS, subnet(json!({"network_id": "00000000-0000-0000-0000-000000000000"})), 404),
        (PORTS, json!({"port": {"network_id": net, "mac_address": "fa:16:3e:00:00:01"}}), 400),
        (PORTS, json!({"port": {"network_id": net, "security_groups": []}}), 400),
        (PORTS, json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.50.0.1"}]}}), 400),
        (PORTS, json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.99.0.1"}]}}), 400),
        (PORTS, json!({"port": {"network_id": bare}}), 409),
    ] {
        let (got, answer) = status(&alice, Method::POST, path, Some(body.clone())).await;
        assert_eq!(got, code, "{path} {body}: {answer}");
        let message = answer.as_object().and_then(|o| o.values().next()).and_then(|e| e["message"].as_str());
        assert!(message.is_some_and(|m| !m.is_empty()), "{path} {body}: a reason is given: {answer}");
    }

    let (code, body) =
        status(&alice, Method::PUT, &format!("{NETWORKS}/{net}"), Some(json!({"network": {"mtu": 1400}}))).await;
    assert_eq!(code, 400, "the MTU is given at create: {body}");

    // Another project's network and port are not found; its network cannot be changed.
    let (code, _) = status(&bob, Method::GET, &format!("{NETWORKS}/{net}"), None).await;
    assert_eq!(code, 404);
    let port = alice.post(PORTS, &json!({"port": {"network_id": net}})).await.unwrap()["port"]["id"].clone();
    let port = port.as_str().unwrap().to_string();
    let (code, body) = boot_with(&bob, "theirs", json!([{"port": port}])).await;
    assert_eq!(code, 404, "{body}");
    let taken =
        alice.post(PORTS, &json!({"port": {"network_id": net}})).await.unwrap()["port"]["fixed_ips"][0]["ip_address"]
            .clone();
    let (code, body) = boot_with(&alice, "taken", json!([{"uuid": net, "fixed_ip": taken}])).await;
    assert_eq!(code, 409, "a fixed IP a port holds: {body}");

    // Server creates that cannot be honoured.
    let bare = bare.as_str().unwrap();
    for (networks, why) in [
        (json!([{"uuid": bare}]), "a network without a subnet"),
        (json!([{"port": port}, {"port": port}]), "one port twice"),
        (json!([{"uuid": net, "fixed_ip": "10.50.0.1"}]), "the gateway"),
        (json!([{"uuid": net, "tag": "x"}]), "a tag (not in v2.1)"),
        (json!([{"uuid": "not-a-uuid"}]), "a malformed uuid"),
        (json!([{"fixed_ip": "10.99.0.5"}]), "an address no network of the caller holds"),
        (json!("some"), "a word other than auto or none"),
    ] {
        let (code, body) = boot_with(&alice, "refused", networks).await;
        assert_eq!(code, 400, "{why}: {body}");
    }
    // A fixed IP named alone lands on the caller's network that holds it.
    let (code, body) = boot_with(&alice, "by-address", json!([{"fixed_ip": "10.50.0.77"}])).await;
    assert_eq!(code, 202, "{body}");
    let by_address = wait_for_status(&alice, body["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    assert_eq!(fixed_addresses(&by_address), ["10.50.0.77"]);
    let image = default_image(&alice).await;
    let (code, body) = status(
        &alice,
        Method::POST,
        "/compute/v2.1/servers",
        Some(json!({"server": {"name": "many", "imageRef": image, "flavorRef": "1", "max_count": 2,
                                "networks": [{"port": port}]}})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(store_violations(&t.cloud.store).is_empty(), "{:?}", store_violations(&t.cloud.store));
    t.shutdown().await;
}

/// The addresses of the interfaces the fake hypervisor running `server` was given, in order.
fn plugged(t: &TestCloud, server: &str) -> Vec<String> {
    let spec = t.cloud.hypervisors.values().flat_map(|h| h.running()).find(|s| s.id.to_string() == server);
    spec.map(|s| s.interfaces.iter().map(|n| n.address.to_string()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn add_fixed_ip_and_remove_fixed_ip_plug_and_unplug_an_interface_on_the_servers_host() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let extra = network_with_subnet(&alice, "extra", "10.90.0.0/24", true).await;
    let vm = boot_active(&alice, "multinic").await;
    let id = vm["id"].as_str().unwrap().to_string();
    let first = fixed_addresses(&vm)[0].clone();
    let action = format!("/compute/v2.1/servers/{id}/action");

    let (code, body) = status(&alice, Method::POST, &action, Some(json!({"addFixedIp": {"networkId": extra}}))).await;
    assert_eq!(code, 202, "{body}");
    let added = wait_for_value("the new interface on the host", Duration::from_secs(5), || async {
        let plugged = plugged(&t, &id);
        (plugged.len() == 2).then(|| plugged[1].clone())
    })
    .await;
    assert!(added.starts_with("10.90.0."), "{added}");
    assert_eq!(plugged(&t, &id)[0], first, "the first interface stays where it was");
    let shown = server(&alice, &id).await.unwrap();
    let mut addresses = fixed_addresses(&shown);
    addresses.sort();
    let mut expected = vec![first.clone(), added.clone()];
    expected.sort();
    assert_eq!(addresses, expected);
    assert_eq!(interfaces(&alice, &id).await.len(), 2);
    wait_until("the change to be closed", Duration::from_secs(5), || async {
        store_violations(&t.cloud.store).is_empty()
    })
    .await;

    // The first interface goes; the added one is all that is left, on the host too.
    let remove = json!({"removeFixedIp": {"address": first}});
    let (code, body) = status(&alice, Method::POST, &action, Some(remove.clone())).await;
    assert_eq!(code, 202, "{body}");
    wait_until("the interface to be unplugged", Duration::from_secs(5), || async {
        plugged(&t, &id) == [added.clone()]
    })
    .await;
    assert_eq!(fixed_addresses(&server(&alice, &id).await.unwrap()), std::slice::from_ref(&added));

    // Refusals: an address it does not have, a network the caller does not see, a malformed body.
    wait_until("the change to be closed", Duration::from_secs(5), || async {
        store_violations(&t.cloud.store).is_empty()
    })
    .await;
    for (body, code) in [
        (remove, 400),
        (json!({"addFixedIp": {"networkId": "00000000-0000-0000-0000-000000000000"}}), 400),
        (json!({"removeFixedIp": {"address": "not-an-ip"}}), 400),
        (json!({"addFixedIp": {}}), 400),
    ] {
        let (got, answer) = status(&alice, Method::POST, &action, Some(body.clone())).await;
        assert_eq!(got, code, "{body}: {answer}");
    }
    // A server that is not ACTIVE cannot change its interfaces.
    alice.post(&action, &json!({"os-stop": null})).await.unwrap();
    wait_for_status(&alice, &id, "SHUTOFF").await;
    wait_until("the stop to be closed", Duration::from_secs(5), || async {
        store_violations(&t.cloud.store).is_empty()
    })
    .await;
    let (code, body) = status(&alice, Method::POST, &action, Some(json!({"addFixedIp": {"networkId": extra}}))).await;
    assert_eq!(code, 409, "{body}");
    alice.delete(&format!("/compute/v2.1/servers/{id}")).await.unwrap();
    wait_for_gone(&alice, &id).await;
    assert!(store_violations(&t.cloud.store).is_empty(), "{:?}", store_violations(&t.cloud.store));
    t.shutdown().await;
}
