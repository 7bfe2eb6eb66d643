//! The network manager end to end: the three modes side by side, VLAN binding, the dataplane the sim driver
//! recorded against what the store implies, fixed-IP reservation, and bad network requests.

use std::collections::BTreeSet;
use std::time::Duration;

use nimbus_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

fn mac_and_ip(server: &Value) -> (String, String) {
    let entry = server["addresses"].as_object().unwrap().values().next().unwrap()[0].clone();
    (entry["OS-EXT-IPS-MAC:mac_addr"].as_str().unwrap().into(), entry["addr"].as_str().unwrap().into())
}

#[tokio::test]
async fn three_modes_side_by_side_get_their_networks_and_the_dataplane_matches_the_store() {
    let t = TestCloud::start().await;
    let dhcp_net = json!({"network": {"label": "dhcp", "cidr": "10.1.0.0/24", "mode": "flat_dhcp", "bridge": "br101"}});
    t.admin.post("/compute/v2.1/os-networks", &dhcp_net).await.unwrap();
    let vlans = json!({"network": {"label": "vlan", "cidr": "10.2.0.0/22", "mode": "vlan", "num_networks": 4,
                                   "network_size": 256, "vlan_start": 200}});
    let created = t.admin.post("/compute/v2.1/os-networks", &vlans).await.unwrap();
    assert_eq!(created["networks"].as_array().unwrap().len(), 4);

    let flat = t.user_in_mode("flat", "member").await;
    let dhcp = t.user_in_mode("flat_dhcp", "member").await;
    let vlan_a = t.user_in_mode("vlan", "member").await;
    let vlan_b = t.user_in_mode("vlan", "member").await;
    let mut servers = Vec::new();
    for (client, tag) in [(&flat, "flat"), (&dhcp, "dhcp"), (&vlan_a, "va"), (&vlan_b, "vb")] {
        for n in 0..2 {
            servers.push((tag, boot_active(client, &format!("{tag}-{n}")).await));
        }
    }
    let ips = |tag: &str| -> Vec<String> {
        servers.iter().filter(|(t, _)| *t == tag).map(|(_, s)| mac_and_ip(s).1).collect()
    };
    assert!(ips("flat").iter().all(|a| a.starts_with("10.0.0.")), "{:?}", ips("flat"));
    assert!(ips("dhcp").iter().all(|a| a.starts_with("10.1.0.")), "{:?}", ips("dhcp"));
    let subnet = |a: &String| a.rsplit_once('.').unwrap().0.to_string();
    let (va, vb): (BTreeSet<String>, BTreeSet<String>) =
        (ips("va").iter().map(subnet).collect(), ips("vb").iter().map(subnet).collect());
    assert_eq!(va.len(), 1, "one VLAN network per project");
    assert_eq!(vb.len(), 1);
    assert_ne!(va, vb, "the VLAN projects get different subnets");
    assert!(va.iter().chain(&vb).all(|s| s.starts_with("10.2.")), "{va:?} {vb:?}");
    // .1 is the gateway and DHCP server, .2 the VPN endpoint: the first instance gets .3.
    assert!(ips("va").iter().chain(&ips("vb")).any(|a| a.ends_with(".3")));

    // The dataplane the sim recorded is what the store implies.
    let networks = t.admin.get("/compute/v2.1/os-networks").await.unwrap()["networks"].as_array().unwrap().clone();
    let bound: Vec<&Value> = networks.iter().filter(|n| n["mode"] == "vlan" && !n["project_id"].is_null()).collect();
    assert_eq!(bound.len(), 2, "two of the four VLAN networks are bound");
    wait_until("leases and segments to settle", Duration::from_secs(5), || async {
        let state = t.cloud.sim().state();
        state.segments.len() == 4
    })
    .await;
    let state = t.cloud.sim().state();
    let by_bridge = |b: &str| state.segments.values().find(|s| s.bridge == b).cloned();
    let private = by_bridge("br100").expect("the flat network's bridge");
    assert!(private.dhcp.is_none() && private.vlan.is_none(), "flat: no DHCP, no segment id");
    let hosts = |tag: &str| -> BTreeSet<(String, String)> {
        servers.iter().filter(|(t, _)| *t == tag).map(|(_, s)| mac_and_ip(s)).collect()
    };
    let recorded = |bridge: &str| -> BTreeSet<(String, String)> {
        by_bridge(bridge)
            .and_then(|s| s.dhcp)
            .map(|(_, h)| h.into_iter().map(|h| (h.mac, h.address.to_string())).collect())
            .unwrap_or_default()
    };
    assert_eq!(recorded("br101"), hosts("dhcp"));
    let bridges: BTreeSet<String> = bound.iter().map(|n| n["bridge"].as_str().unwrap().to_string()).collect();
    assert_eq!(bridges, BTreeSet::from(["br-vlan200".to_string(), "br-vlan201".to_string()]));
    let vlan_hosts: BTreeSet<_> = recorded("br-vlan200").union(&recorded("br-vlan201")).cloned().collect();
    assert_eq!(vlan_hosts, hosts("va").union(&hosts("vb")).cloned().collect());
    for n in &bound {
        let segment = by_bridge(n["bridge"].as_str().unwrap()).unwrap();
        assert_eq!(segment.vlan.map(u64::from), n["vlan"].as_u64());
    }
    assert!(
        by_bridge("br-vlan202").is_none() && by_bridge("br-vlan203").is_none(),
        "unbound VLAN networks have no dataplane"
    );
    assert_eq!(state.vpns.len(), 2, "one VPN endpoint per VLAN project");
    assert!(state.vpns.values().all(|v| v.private_address.to_string().ends_with(".2")));
    assert!(state.nat.snat_ranges.len() >= 6, "every fixed range is SNATed: {:?}", state.nat.snat_ranges);

    // DHCP leases are reported back and recorded.
    let (_, dhcp_ip) = mac_and_ip(&servers.iter().find(|(t, _)| *t == "dhcp").unwrap().1);
    wait_until("the lease to be recorded", Duration::from_secs(5), || async {
        t.fixed_ip_row(&dhcp_ip).is_some_and(|row| row.leased)
    })
    .await;

    // Deleting releases the lease and frees the address.
    let dhcp_server = servers.iter().find(|(t, _)| *t == "dhcp").unwrap().1["id"].as_str().unwrap().to_string();
    dhcp.delete(&format!("/compute/v2.1/servers/{dhcp_server}")).await.unwrap();
    wait_for_gone(&dhcp, &dhcp_server).await;
    wait_until("the address to be free", Duration::from_secs(5), || async { t.fixed_ip_row(&dhcp_ip).is_none() }).await;
    assert_eq!(recorded_after(&t, "br101").len(), 1, "its DHCP host entry is gone");
    let violations = store_violations(&t.cloud.store);
    assert!(violations.is_empty(), "{violations:#?}");
    t.shutdown().await;
}

fn recorded_after(t: &TestCloud, bridge: &str) -> Vec<String> {
    let state = t.cloud.sim().state();
    let segment = state.segments.values().find(|s| s.bridge == bridge).cloned().unwrap();
    segment.dhcp.map(|(_, h)| h.into_iter().map(|h| h.mac).collect()).unwrap_or_default()
}

#[tokio::test]
async fn vlan_projects_beyond_the_free_networks_get_a_clear_error() {
    let t = TestCloud::start().await;
    let one = json!({"network": {"label": "v", "cidr": "10.3.0.0/24", "mode": "vlan", "vlan_start": 300}});
    t.admin.post("/compute/v2.1/os-networks", &one).await.unwrap();
    let first = t.user_in_mode("vlan", "member").await;
    boot_active(&first, "gets-the-network").await;
    let second = t.user_in_mode("vlan", "member").await;
    let id = create_server(&second, "no-network-left").await;
    let server = wait_for_status(&second, &id, "ERROR").await;
    let fault = server["fault"]["message"].as_str().unwrap();
    assert!(fault.contains("No free VLAN network is left"), "{fault}");
    t.shutdown().await;
}

#[tokio::test]
async fn bad_network_requests_are_refused_clearly() {
    let t = TestCloud::start().await;
    let cases = [
        (json!({"label": "x", "cidr": "10.0.0.0/25"}), 409, "overlaps network private"),
        (json!({"label": "x", "cidr": "10.9.0.5/24"}), 400, "not a network address"),
        (json!({"label": "x", "cidr": "0.0.0.0/0"}), 400, "can never hold instance addresses"),
        (json!({"label": "x", "cidr": "127.0.0.0/24"}), 400, "127.0.0.0/8 (loopback)"),
        (
            json!({"label": "x", "cidr": "10.9.0.0/16", "mode": "vlan", "num_networks": 3, "vlan_start": 4093}),
            400,
            "out of range",
        ),
        (json!({"label": "x", "cidr": "10.9.0.0/24", "num_networks": 2}), 400, "too few"),
        (json!({"label": "x", "cidr": "nonsense"}), 400, "not an IPv4 CIDR"),
        (json!({"label": "x", "cidr": "10.9.0.0/24", "mode": "token-ring"}), 400, "Unknown mode"),
        (json!({"label": "x", "cidr": "10.9.0.0/24", "mtu": 9001}), 400, "MTU 9001 is out of range"),
        // A field nimbus would not apply is refused, not dropped.
        (json!({"label": "x", "cidr": "10.9.0.0/24", "priority": 1}), 400, "unknown field `priority`"),
    ];
    for (network, status, message) in cases {
        let (got, body) =
            t.admin.raw(Method::POST, "/compute/v2.1/os-networks", Some(&json!({"network": network}))).await.unwrap();
        assert_eq!(got.as_u16(), status, "{network}: {body}");
        let text = body.to_string();
        assert!(text.contains(message), "{network}: {text}");
    }
    let member = t.user_with_role("member").await;
    let (got, _) = member
        .raw(
            Method::POST,
            "/compute/v2.1/os-networks",
            Some(&json!({"network": {"label": "m", "cidr": "10.8.0.0/24"}})),
        )
        .await
        .unwrap();
    assert_eq!(got.as_u16(), 403);

    // A network in use cannot be deleted.
    let vm = boot_active(&t.admin, "holds-private").await;
    let private =
        t.admin.get("/compute/v2.1/os-networks").await.unwrap()["networks"][0]["id"].as_str().unwrap().to_string();
    let (got, body) = t.admin.raw(Method::DELETE, &format!("/compute/v2.1/os-networks/{private}"), None).await.unwrap();
    assert_eq!(got.as_u16(), 409, "{body}");
    t.admin.delete(&format!("/compute/v2.1/servers/{}", vm["id"].as_str().unwrap())).await.unwrap();
    wait_for_gone(&t.admin, vm["id"].as_str().unwrap()).await;
    t.admin.delete(&format!("/compute/v2.1/os-networks/{private}")).await.unwrap();
    assert!(t.cloud.sim().state().segments.values().all(|s| s.bridge != "br100"), "its bridge is gone");
    t.shutdown().await;
}

#[tokio::test]
async fn operators_reserve_and_unreserve_fixed_ips() {
    let t = TestCloud::start().await;
    t.admin.post("/compute/v2.1/os-fixed-ips/10.0.0.2/action", &json!({"reserve": null})).await.unwrap();
    assert!(t.fixed_ip_row("10.0.0.2").is_some_and(|row| row.reserved && !row.allocated));
    let vm = boot_active(&t.admin, "skips-reserved").await;
    assert_eq!(mac_and_ip(&vm).1, "10.0.0.3");
    t.admin.post("/compute/v2.1/os-fixed-ips/10.0.0.2/action", &json!({"unreserve": null})).await.unwrap();
    let vm2 = boot_active(&t.admin, "gets-unreserved").await;
    assert_eq!(mac_and_ip(&vm2).1, "10.0.0.2");
    let (got, body) = t
        .admin
        .raw(Method::POST, "/compute/v2.1/os-fixed-ips/10.0.0.1/action", Some(&json!({"reserve": null})))
        .await
        .unwrap();
    assert_eq!(got.as_u16(), 400, "the gateway is always kept: {body}");
    let (got, _) = t
        .admin
        .raw(Method::POST, "/compute/v2.1/os-fixed-ips/10.0.0.3/action", Some(&json!({"reserve": null})))
        .await
        .unwrap();
    assert_eq!(got.as_u16(), 409, "an address in use cannot be reserved");
    let (got, _) = t.admin.raw(Method::GET, "/compute/v2.1/os-fixed-ips/192.168.77.1", None).await.unwrap();
    assert_eq!(got.as_u16(), 404);
    t.shutdown().await;
}

#[tokio::test]
async fn killed_network_actors_rebuild_the_same_dataplane() {
    let t = TestCloud::start().await;
    t.admin
        .post(
            "/compute/v2.1/os-networks",
            &json!({"network": {"label": "v", "cidr": "10.4.0.0/24", "mode": "vlan", "vlan_start": 400}}),
        )
        .await
        .unwrap();
    let vlan = t.user_in_mode("vlan", "member").await;
    let vm = boot_active(&vlan, "vlan-vm").await;
    let fip = vlan.post("/compute/v2.1/os-floating-ips", &json!({"pool": "public"})).await.unwrap();
    let address = fip["floating_ip"]["ip"].as_str().unwrap().to_string();
    vlan.post(
        &format!("/compute/v2.1/servers/{}/action", vm["id"].as_str().unwrap()),
        &json!({"addFloatingIp": {"address": address}}),
    )
    .await
    .unwrap();
    let before = t.cloud.sim().state();
    assert_eq!(before.nat.floating.len(), 1);
    let project = vm["tenant_id"].as_str().unwrap();
    // As if the host had lost it all: only the restarted actors can bring it back.
    t.cloud.sim().forget();
    for actor in ["network".to_string(), format!("vlan/{project}")] {
        t.kill_and_wait_for_restart(&actor).await;
    }
    wait_until("the restarted actors to re-apply the same state", Duration::from_secs(5), || async {
        t.cloud.sim().state() == before
    })
    .await;
    t.shutdown().await;
}

#[tokio::test]
async fn addresses_whose_dhcp_release_never_comes_are_reclaimed() {
    // The test timing reclaims after 2 s.
    let t = TestCloud::start().await;
    let dhcp_net = json!({"network": {"label": "dhcp", "cidr": "10.1.0.0/24", "mode": "flat_dhcp", "bridge": "br101"}});
    t.admin.post("/compute/v2.1/os-networks", &dhcp_net).await.unwrap();
    let dhcp = t.user_in_mode("flat_dhcp", "member").await;
    let vm = boot_active(&dhcp, "leaky").await;
    let (_, ip) = mac_and_ip(&vm);
    wait_until("the lease", Duration::from_secs(5), || async { t.fixed_ip_row(&ip).is_some_and(|row| row.leased) })
        .await;
    t.cloud.sim().lose_releases(true);
    dhcp.delete(&format!("/compute/v2.1/servers/{}", vm["id"].as_str().unwrap())).await.unwrap();
    wait_for_gone(&dhcp, vm["id"].as_str().unwrap()).await;
    let held = t.fixed_ip_row(&ip).map(|row| (row.allocated, row.leased));
    assert_eq!(held, Some((false, true)), "still leased: held back");
    let next = boot_active(&dhcp, "meanwhile").await;
    assert_ne!(mac_and_ip(&next).1, ip, "a still-leased address is not handed out again");
    wait_until("the reclaim timer to free it", Duration::from_secs(10), || async {
        t.fixed_ip_row(&ip).is_none_or(|row| !row.leased)
    })
    .await;
    let after = boot_active(&dhcp, "reuses-it").await;
    assert_eq!(mac_and_ip(&after).1, ip, "the reclaimed address is the lowest free one again");
    t.shutdown().await;
}

#[tokio::test]
async fn a_restarted_cloud_rebuilds_the_whole_dataplane_from_the_store() {
    let t = TestCloud::start().await;
    let dhcp_net = json!({"network": {"label": "dhcp", "cidr": "10.1.0.0/24", "mode": "flat_dhcp", "bridge": "br101"}});
    t.admin.post("/compute/v2.1/os-networks", &dhcp_net).await.unwrap();
    let vlans =
        json!({"network": {"label": "v", "cidr": "10.2.0.0/23", "mode": "vlan", "num_networks": 2, "vlan_start": 200}});
    t.admin.post("/compute/v2.1/os-networks", &vlans).await.unwrap();
    let dhcp = t.user_in_mode("flat_dhcp", "member").await;
    let vlan = t.user_in_mode("vlan", "member").await;
    boot_active(&dhcp, "d").await;
    let v = boot_active(&vlan, "v").await;
    let fip = vlan.post("/compute/v2.1/os-floating-ips", &json!({})).await.unwrap()["floating_ip"]["ip"].clone();
    vlan.post(
        &format!("/compute/v2.1/servers/{}/action", v["id"].as_str().unwrap()),
        &json!({"addFloatingIp": {"address": fip}}),
    )
    .await
    .unwrap();
    // The VLAN project keeps its network (and VPN endpoint) even with no instance left.
    vlan.delete(&format!("/compute/v2.1/servers/{}", v["id"].as_str().unwrap())).await.unwrap();
    wait_for_gone(&vlan, v["id"].as_str().unwrap()).await;
    let before = t.cloud.sim().state();
    assert_eq!(before.vpns.len(), 1);

    let t = t.restart(Options::default()).await;
    wait_until("the dataplane to be rebuilt", Duration::from_secs(10), || async { t.cloud.sim().state() == before })
        .await;
    t.shutdown().await;
}
