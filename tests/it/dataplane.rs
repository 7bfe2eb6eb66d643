//! The real dataplane, proven with packets: the `linux` driver and `netns` instances in a lab of network
//! namespaces. Needs root and iproute2, nftables, dnsmasq, busybox (`.ci/run` installs them); without them
//! each test says why it skips.

use std::net::Ipv4Addr;
use std::time::Duration;

use nimbus::client::Client;
use nimbus_storage::Reads;
use nimbus_storage::schema::FIXED_IPS;
use nimbus_tests::lab::{Lab, OUTSIDE, http_get};
use nimbus_tests::*;
use serde_json::{Value, json};

fn id_of(server: &Value) -> String {
    server["id"].as_str().unwrap().to_string()
}

fn fixed_ip(server: &Value) -> Ipv4Addr {
    fixed_addresses(server)[0].parse().unwrap()
}

fn leased(t: &TestCloud, address: Ipv4Addr) -> Option<bool> {
    let rows = t.cloud.store.read(|r| r.scan(&FIXED_IPS)).unwrap();
    rows.into_iter().find(|(_, row)| row.address == address).map(|(_, row)| row.leased)
}

/// Waits until the instance's eth0 has exactly `address` (DHCP takes a moment after ACTIVE, as on a VM).
async fn wait_for_address(lab: &Lab, server: &Value, address: Ipv4Addr, prefix: u8) {
    let ns = lab.instance(&id_of(server));
    let want = format!("{address}/{prefix}");
    wait_until(&format!("{ns} to have {want}"), Duration::from_secs(20), || async {
        lab.addresses(&ns, "eth0") == vec![want.clone()]
    })
    .await;
}

async fn add_network(t: &TestCloud, body: Value) {
    t.admin.post("/compute/v2.1/os-networks", &json!({ "network": body })).await.unwrap();
}

const RULES: &str = "/network/v2.0/security-group-rules";

/// The id of the client's security group `name`.
async fn group_id(client: &Client, name: &str) -> String {
    let groups = client.get("/network/v2.0/security-groups").await.unwrap();
    let group = groups["security_groups"].as_array().unwrap().iter().find(|g| g["name"] == name).cloned();
    group.unwrap_or_else(|| panic!("no group {name} in {groups}"))["id"].as_str().unwrap().to_string()
}

/// Adds an ingress rule (`rule`'s fields over the group's id) and returns its id.
async fn allow_in(client: &Client, group: &str, rule: Value) -> String {
    let mut body = json!({"security_group_id": group, "direction": "ingress"});
    body.as_object_mut().unwrap().extend(rule.as_object().unwrap().clone());
    let made = client.post(RULES, &json!({ "security_group_rule": body })).await.unwrap();
    made["security_group_rule"]["id"].as_str().unwrap().to_string()
}

/// Makes security group `name` (egress anywhere, nothing in) and returns its id.
async fn new_group(client: &Client, name: &str) -> String {
    let made = client.post("/network/v2.0/security-groups", &json!({"security_group": {"name": name}})).await.unwrap();
    made["security_group"]["id"].as_str().unwrap().to_string()
}

/// A server in security group `group` only, once ACTIVE.
async fn boot_in_group(client: &Client, name: &str, group: &str) -> Value {
    let image = default_image(client).await;
    let body =
        json!({"server": {"name": name, "imageRef": image, "flavorRef": "1", "security_groups": [{"name": group}]}});
    let created = client.post("/compute/v2.1/servers", &body).await.unwrap();
    wait_for_status(client, created["server"]["id"].as_str().unwrap(), "ACTIVE").await
}

/// The security-group table of `ns` as nft lists it.
fn firewall_table(lab: &Lab, ns: &str) -> String {
    lab.exec(ns, "nft", &["list", "table", "ip", "nimbus-firewall"]).unwrap_or_default()
}

/// Waits (at most the second a rule change may take) until `ns`'s security-group table satisfies `wanted`.
async fn firewall_reaches(lab: &Lab, ns: &str, what: &str, wanted: impl Fn(&str) -> bool) {
    wait_until(what, Duration::from_secs(1), || async { wanted(&firewall_table(lab, ns)) }).await;
}

#[tokio::test]
async fn flat_addresses_are_injected_and_dhcp_leases_match_the_store() {
    let Some(lab) = Lab::new("addr") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    add_network(&t, json!({"label": "dhcp", "cidr": "10.1.0.0/24", "mode": "flat_dhcp", "bridge": "br101"})).await;
    let flat = t.user_in_mode("flat", "member").await;
    let dhcp = t.user_in_mode("flat_dhcp", "member").await;

    // Flat: the address is written into the instance and configured, with no DHCP server involved.
    let f1 = boot_active(&flat, "flat-1").await;
    let ns = lab.instance(&id_of(&f1));
    assert_eq!(lab.addresses(&ns, "eth0"), vec![format!("{}/24", fixed_ip(&f1))]);
    let route = lab.exec(&ns, "ip", &["route", "show", "default"]).unwrap();
    assert!(route.contains("via 10.0.0.1"), "{route}");
    let mac = lab.exec(&ns, "cat", &["/sys/class/net/eth0/address"]).unwrap();
    assert_eq!(mac.trim(), f1["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"].as_str().unwrap());

    // FlatDHCP: the lease dnsmasq hands out is the fixed IP in the store, and its event marks it leased.
    let d1 = boot_active(&dhcp, "dhcp-1").await;
    let address = fixed_ip(&d1);
    wait_for_address(&lab, &d1, address, 24).await;
    wait_until("the lease event to mark the address leased", Duration::from_secs(10), || async {
        leased(&t, address) == Some(true)
    })
    .await;
    assert!(lab.ping(&lab.instance(&id_of(&d1)), "10.1.0.1".parse().unwrap()), "the instance reaches its gateway");

    // Deleting the instance releases the lease, so the next instance can get the same address at once.
    dhcp.delete(&format!("/compute/v2.1/servers/{}", id_of(&d1))).await.unwrap();
    wait_for_gone(&dhcp, &id_of(&d1)).await;
    wait_until("the address to be free", Duration::from_secs(10), || async { leased(&t, address).is_none() }).await;

    // A DHCP server that dies is started again.
    let linux = t.cloud.linux.as_ref().unwrap();
    let pids: Vec<u32> = linux.dhcp_pids().into_values().collect();
    assert_eq!(pids.len(), 1, "one dnsmasq, for the one DHCP network");
    lab.exec(&lab.host, "kill", &["-9", &pids[0].to_string()]).unwrap();
    wait_until("dnsmasq to be restarted", Duration::from_secs(10), || async {
        linux.dhcp_pids().into_values().next().is_some_and(|pid| pid != pids[0])
    })
    .await;
    let d2 = boot_active(&dhcp, "dhcp-2").await;
    assert_eq!(fixed_ip(&d2), address, "the freed address is handed out again");
    wait_for_address(&lab, &d2, address, 24).await;
    t.shutdown().await;
}

#[tokio::test]
async fn projects_reach_their_own_instances_only_and_spoofing_is_dropped() {
    let Some(lab) = Lab::new("vlan") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    add_network(
        &t,
        json!({"label": "tenants", "cidr": "10.2.0.0/22", "mode": "vlan", "num_networks": 4, "network_size": 256,
               "vlan_start": 100}),
    )
    .await;
    let blue = t.user_in_mode("vlan", "member").await;
    let red = t.user_in_mode("vlan", "member").await;
    let (b1, b2, r1) =
        (boot_active(&blue, "blue-1").await, boot_active(&blue, "blue-2").await, boot_active(&red, "red-1").await);
    for s in [&b1, &b2, &r1] {
        wait_for_address(&lab, s, fixed_ip(s), 24).await;
    }
    // On this kernel a project's segment is a VXLAN, each on its own bridge.
    let vxlans = lab.exec(&lab.host, "ip", &["-o", "link", "show", "type", "vxlan"]).unwrap();
    assert_eq!(vxlans.lines().count(), 2, "one VXLAN per bound project: {vxlans}");
    let bridges = lab.exec(&lab.host, "ip", &["-o", "link", "show", "type", "bridge"]).unwrap();
    assert!(bridges.contains("br-vlan100") && bridges.contains("br-vlan101"), "{bridges}");

    let blue1 = lab.instance(&id_of(&b1));
    assert!(lab.ping(&blue1, fixed_ip(&b2)), "same project: ping");
    assert_eq!(http_get(&blue1, fixed_ip(&b2)).await.unwrap(), "blue-2", "same project: HTTP");
    assert!(!lab.ping(&blue1, fixed_ip(&r1)), "another project's instance does not answer a ping");
    assert!(http_get(&blue1, fixed_ip(&r1)).await.is_err(), "nor HTTP");
    assert!(!lab.ping(&lab.instance(&id_of(&r1)), fixed_ip(&b1)), "the other way round neither");

    // Anti-spoofing: another IP, or another MAC, and nothing gets out.
    let gateway: Ipv4Addr = format!("{}.1", fixed_ip(&b1).to_string().rsplit_once('.').unwrap().0).parse().unwrap();
    assert!(lab.ping(&blue1, gateway));
    let own = format!("{}/24", fixed_ip(&b1));
    let spoofed = format!("{}/24", Ipv4Addr::from(u32::from(fixed_ip(&b1)) + 50));
    let set_address = |address: &str| {
        lab.exec(&blue1, "ip", &["addr", "flush", "dev", "eth0"]).unwrap();
        lab.exec(&blue1, "ip", &["addr", "add", address, "dev", "eth0"]).unwrap();
        assert_eq!(lab.addresses(&blue1, "eth0"), vec![address.to_string()]);
    };
    set_address(&spoofed);
    assert!(!lab.ping(&blue1, fixed_ip(&b2)), "a changed IP gets no packets out");
    set_address(&own);
    assert!(lab.ping(&blue1, fixed_ip(&b2)), "its own IP works again");
    lab.exec(&blue1, "ip", &["link", "set", "eth0", "address", "fa:16:3e:66:66:66"]).unwrap();
    assert!(!lab.ping(&blue1, fixed_ip(&b2)), "a changed MAC gets no packets out");
    t.shutdown().await;
}

#[tokio::test]
async fn floating_ips_follow_their_instance_survive_a_network_manager_restart_and_everything_is_cleaned_up() {
    let Some(lab) = Lab::new("fip") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    add_network(&t, json!({"label": "dhcp", "cidr": "10.1.0.0/24", "mode": "flat_dhcp", "bridge": "br101"})).await;
    let alice = t.user_in_mode("flat_dhcp", "member").await;
    // The default group lets in only its own members; the web servers are for the outside too.
    allow_in(&alice, &group_id(&alice, "default").await, json!({"protocol": "tcp", "port_range_min": 80})).await;
    let (vm1, vm2) = (boot_active(&alice, "vm1").await, boot_active(&alice, "vm2").await);
    for s in [&vm1, &vm2] {
        wait_for_address(&lab, s, fixed_ip(s), 24).await;
    }
    let fip = alice.post("/compute/v2.1/os-floating-ips", &json!({"pool": "public"})).await.unwrap();
    let (fip_id, address) = (fip["floating_ip"]["id"].as_str().unwrap().to_string(), fip["floating_ip"]["ip"].clone());
    let floating: Ipv4Addr = address.as_str().unwrap().parse().unwrap();
    let action = |s: &Value| format!("/compute/v2.1/servers/{}/action", id_of(s));

    alice.post(&action(&vm1), &json!({"addFloatingIp": {"address": address}})).await.unwrap();
    assert_eq!(http_get(&lab.public, floating).await.unwrap(), "vm1", "the floating IP reaches vm1");
    alice.post(&action(&vm1), &json!({"removeFloatingIp": {"address": address}})).await.unwrap();
    assert!(http_get(&lab.public, floating).await.is_err(), "disassociated, it reaches nothing");
    alice.post(&action(&vm2), &json!({"addFloatingIp": {"address": address}})).await.unwrap();
    assert_eq!(http_get(&lab.public, floating).await.unwrap(), "vm2", "moved, it reaches vm2");
    // Outbound traffic of an instance leaves from the public side.
    assert!(lab.ping(&lab.instance(&id_of(&vm1)), OUTSIDE), "instances reach the outside");

    // Kill the network manager: the floating IP keeps answering throughout, and the kernel state after its
    // restart is the state before.
    let before = kernel_state(&lab);
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let probe = {
        let (public, stop, answered) = (lab.public.clone(), stop.clone(), answered.clone());
        tokio::spawn(async move {
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match http_get(&public, floating).await {
                    Ok(body) if body == "vm2" => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failed
        })
    };
    let killed = t.running_id("network").unwrap();
    t.admin.post("/admin/actors/kill", &json!({"name": "network"})).await.unwrap();
    // The new incarnation re-applies the whole dataplane in its start, before it counts as running.
    wait_until("the network manager to restart", Duration::from_secs(10), || async {
        t.running_id("network").is_some_and(|id| id != killed)
    })
    .await;
    // Keep probing across a reconcile pass of the new incarnation (every 500 ms in tests).
    let after_restart = answered.load(Ordering::SeqCst);
    wait_until("25 more answers after the restart", Duration::from_secs(10), || async {
        answered.load(Ordering::SeqCst) >= after_restart + 25
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let failed = probe.await.unwrap();
    assert!(failed.is_empty(), "{} answers, failures: {failed:?}", answered.load(Ordering::SeqCst));
    assert_eq!(kernel_state(&lab), before, "the restart changed the kernel state");

    // Restart the whole of nimbus: the kernel state is the same again (dnsmasq is adopted, not restarted), and
    // the floating IP answers right after.
    let t = t.restart(lab.options()).await;
    assert_eq!(kernel_state(&lab), before, "a restart of nimbus changed the kernel state");
    assert_eq!(http_get(&lab.public, floating).await.unwrap(), "vm2");
    let alice = t.user_on(vm1["tenant_id"].as_str().unwrap(), "member").await;

    // Delete everything: nothing of nimbus is left in the kernel.
    for s in [&vm1, &vm2] {
        alice.delete(&format!("/compute/v2.1/servers/{}", id_of(s))).await.unwrap();
        wait_for_gone(&alice, &id_of(s)).await;
    }
    alice.delete(&format!("/compute/v2.1/os-floating-ips/{fip_id}")).await.unwrap();
    let networks = t.admin.get("/compute/v2.1/os-networks").await.unwrap();
    for n in networks["networks"].as_array().unwrap() {
        let id = n["id"].as_str().unwrap();
        t.admin.post(&format!("/compute/v2.1/os-networks/{id}/action"), &json!({"disassociate": null})).await.ok();
        t.admin.delete(&format!("/compute/v2.1/os-networks/{id}")).await.unwrap();
    }
    wait_until("nimbus's kernel state to be gone", Duration::from_secs(10), || async {
        lab.host_leftovers().is_empty()
    })
    .await;
    t.shutdown().await;
}

/// Links, addresses, nftables ruleset and processes of the network host, for before/after comparisons.
fn kernel_state(lab: &Lab) -> Vec<String> {
    let mut state = Vec::new();
    for args in [&["-o", "link", "show"][..], &["-o", "addr", "show"][..]] {
        let out = lab.exec(&lab.host, "ip", args).unwrap();
        // Counters and timers change on their own; names, addresses and flags do not.
        state.extend(out.lines().map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" ")));
    }
    state.push(lab.exec(&lab.host, "nft", &["list", "ruleset"]).unwrap());
    // The servers running there (dnsmasq), not the short-lived `nft` / `ip` of a reconcile pass.
    state.extend(lab.processes(&lab.host).into_iter().filter(|p| p.contains("dnsmasq")));
    state
}

#[tokio::test]
async fn vlan_segments_use_8021q_where_the_kernel_has_it_and_fail_clearly_where_not() {
    let Some(lab) = Lab::new("dot1q") else { return };
    let mut options = lab.options();
    options.drivers.segments = nimbus_actors::dataplane::linux::SegmentKind::Vlan;
    let t = TestCloud::start_with(options).await;
    add_network(
        &t,
        json!({"label": "tenants", "cidr": "10.2.0.0/24", "mode": "vlan", "num_networks": 1, "network_size": 256,
               "vlan_start": 100, "bridge_interface": nimbus_tests::lab::PUBLIC_INTERFACE}),
    )
    .await;
    let blue = t.user_in_mode("vlan", "member").await;
    let probe = lab.exec(&lab.host, "ip", &["link", "add", "link", "eth0", "name", "probe", "type", "vlan", "id", "9"]);
    let id = create_server(&blue, "blue-1").await;
    if probe.is_ok() {
        // A kernel with 802.1Q: the segment is a VLAN link on the bridge interface.
        wait_for_status(&blue, &id, "ACTIVE").await;
        let links = lab.exec(&lab.host, "ip", &["-o", "link", "show", "type", "vlan"]).unwrap();
        assert!(links.contains("vlan100@eth0"), "{links}");
    } else {
        let failed = wait_for_status(&blue, &id, "ERROR").await;
        let fault = failed["fault"]["message"].as_str().unwrap_or_default().to_string();
        assert!(fault.contains("no VLAN (8021q) support"), "{fault}");
    }
    t.shutdown().await;
}

/// `nimbus node` with the real drivers, in the lab: the controller is the network host (in `lab.host`), each
/// compute node a host namespace of its own; VXLAN segments cross the lab's underlay.
mod multi_host {
    use super::*;
    use nimbus_tests::process::{NimbusProcess, free_port};

    const PASSWORD: &str = "multi-host-secret";
    const COOKIE: &str = "a-multi-host-cookie-of-enough-length";
    const VXLAN: [&str; 4] = ["--vxlan-dev", "ul0", "--vxlan-group", "239.1.1.1"];

    fn node(dir: &std::path::Path, name: &str, args: &[&str], ready: &str) -> NimbusProcess {
        let data = dir.join(name).display().to_string();
        let mut all: Vec<String> =
            ["node", "--data-dir", data.as_str(), "--report-interval-ms", "200", "--insecure-plaintext"]
                .map(String::from)
                .to_vec();
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(VXLAN.map(String::from));
        let env = [("NIMBUS_COOKIE", COOKIE), ("NIMBUS_ADMIN_PASSWORD", PASSWORD)];
        NimbusProcess::spawn(&dir.join(name), &all, &env, ready)
    }

    #[tokio::test]
    async fn compute_nodes_plumb_their_own_segments_and_instances_get_their_network_from_the_network_host() {
        let Some(lab) = Lab::new("mh") else { return };
        let hosts = lab.with_underlay(&["c1", "c2"]);
        let dir = tempfile::tempdir().unwrap();
        let (api, cluster) = (format!("127.0.0.1:{}", free_port()), free_port());
        let cluster_listen = format!("127.0.0.1:{cluster}");
        let ctl = node(
            dir.path(),
            "controller",
            &[
                "--role",
                "controller",
                "--listen",
                &api,
                "--cluster-listen",
                &cluster_listen,
                "--dataplane",
                "linux",
                "--host-netns",
                &lab.host,
                "--floating-range",
                nimbus_tests::lab::FLOATING_RANGE,
            ],
            &api,
        );
        let computes: Vec<NimbusProcess> = ["c1", "c2"]
            .iter()
            .zip(&hosts)
            .map(|(name, host_ns)| {
                let own = format!("127.0.0.1:{}", free_port());
                let prefix = format!("{host_ns}-i-");
                node(
                    dir.path(),
                    name,
                    &[
                        "--role",
                        "compute",
                        "--host",
                        name,
                        "--join",
                        &cluster_listen,
                        "--cluster-listen",
                        &own,
                        "--dataplane",
                        "linux",
                        "--virt",
                        "netns",
                        "--host-netns",
                        host_ns,
                        "--instance-prefix",
                        &prefix,
                        "--instance-httpd",
                    ],
                    &own,
                )
            })
            .collect();
        let admin = Client::login(&ctl.url, "admin", PASSWORD, "admin").await.unwrap();
        wait_until("both compute hosts to report", Duration::from_secs(30), || async {
            let listed = admin.get("/compute/v2.1/os-hypervisors").await.unwrap();
            listed["hypervisors"].as_array().unwrap().iter().filter(|h| h["state"] == "up").count() == 2
        })
        .await;
        let body = json!({"network": {"label": "tenants", "cidr": "10.2.0.0/22", "mode": "vlan", "num_networks": 4,
                                      "network_size": 256, "vlan_start": 100}});
        admin.post("/compute/v2.1/os-networks", &body).await.unwrap();
        let project = new_project(&admin, "vlan").await;
        let blue = new_user_on(&admin, &project, "member").await.client(&ctl.url).await;
        allow_in(&blue, &group_id(&blue, "default").await, json!({"protocol": "tcp", "port_range_min": 80})).await;
        let (b1, b2) = (boot_active(&blue, "blue-1").await, boot_active(&blue, "blue-2").await);
        // The host is shown to admins only.
        let (b1, b2) = (server(&admin, &id_of(&b1)).await.unwrap(), server(&admin, &id_of(&b2)).await.unwrap());
        let host_of = |s: &Value| s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string();
        let placed: std::collections::BTreeSet<String> = [host_of(&b1), host_of(&b2)].into();
        assert_eq!(placed, ["c1".to_string(), "c2".to_string()].into(), "one instance on each compute host");

        // Each compute host made the project's bridge and VXLAN itself; only the network host has addresses
        // and the DHCP server on it.
        for host_ns in &hosts {
            let links = lab.exec(host_ns, "ip", &["-o", "link", "show"]).unwrap();
            assert!(links.contains("br-vlan100") && links.contains("vx100"), "{host_ns}: {links}");
            assert!(lab.addresses(host_ns, "br-vlan100").is_empty(), "no gateway address on a compute host");
        }
        // Over the segment: DHCP from the network host, and the two instances reach each other across hosts.
        let ns_of = |s: &Value| {
            let host_ns = if host_of(s) == "c1" { &hosts[0] } else { &hosts[1] };
            format!("{host_ns}-i-{}", id_of(s))
        };
        for s in [&b1, &b2] {
            let (ns, want) = (ns_of(s), format!("{}/24", fixed_ip(s)));
            wait_until(&format!("{ns} to get {want} by DHCP"), Duration::from_secs(20), || async {
                lab.addresses(&ns, "eth0") == vec![want.clone()]
            })
            .await;
        }
        assert!(lab.ping(&ns_of(&b1), fixed_ip(&b2)), "blue-1 reaches blue-2 on the other host");
        assert_eq!(http_get(&ns_of(&b2), fixed_ip(&b1)).await.unwrap(), "blue-1");

        // A floating IP NATed on the network host reaches the instance on its compute host.
        let fip = blue.post("/compute/v2.1/os-floating-ips", &json!({"pool": "public"})).await.unwrap();
        let address = fip["floating_ip"]["ip"].clone();
        blue.post(
            &format!("/compute/v2.1/servers/{}/action", id_of(&b2)),
            &json!({"addFloatingIp": {"address": address}}),
        )
        .await
        .unwrap();
        let floating: Ipv4Addr = address.as_str().unwrap().parse().unwrap();
        wait_until("the floating IP to reach blue-2", Duration::from_secs(10), || async {
            http_get(&lab.public, floating).await.is_ok_and(|body| body == "blue-2")
        })
        .await;
        drop(computes);
        drop(ctl);
    }
}

// Several threads: `wget` runs as a blocking child process while the cloud, in this runtime, answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_read_their_own_metadata_at_the_link_local_address_and_nothing_when_spoofing() {
    let Some(lab) = Lab::new("meta") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    let user = t.user_in_mode("flat", "member").await;
    let key = user.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "k1"}})).await.unwrap();
    let public_key = key["keypair"]["public_key"].as_str().unwrap().to_string();
    let image = default_image(&user).await;
    // "#!/bin/sh\necho hi\n"
    let body = json!({"server": {"name": "meta-1", "imageRef": image, "flavorRef": "1", "key_name": "k1",
        "user_data": "IyEvYmluL3NoCmVjaG8gaGkK"}});
    let created = user.post("/compute/v2.1/servers", &body).await.unwrap();
    let a = wait_for_status(&user, created["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    let b = boot_active(&user, "meta-2").await;
    let ns = lab.instance(&id_of(&a));
    let get = |path: &str| {
        let url = format!("http://169.254.169.254{path}");
        // busybox wget's own timeout crashes on this busybox: bound the wait from outside.
        lab.exec(&ns, "timeout", &["5", "busybox", "wget", "-q", "-O-", &url])
    };

    let meta: Value = serde_json::from_str(&get("/openstack/latest/meta_data.json").unwrap()).unwrap();
    assert_eq!(meta["uuid"], id_of(&a).as_str());
    assert_eq!(meta["public_keys"]["k1"], public_key.as_str());
    assert!(get("/latest/meta-data/instance-id").unwrap().starts_with("i-"));
    assert_eq!(get("/latest/meta-data/local-ipv4").unwrap(), fixed_ip(&a).to_string());
    assert_eq!(get("/latest/meta-data/public-keys/0/openssh-key").unwrap(), public_key);
    assert_eq!(get("/latest/user-data").unwrap(), "#!/bin/sh\necho hi\n");
    assert!(get("/openstack/latest/vendor_data.json").is_err(), "what is not there is a 404");

    // The service outlives the actor that serves it.
    t.kill_and_wait_for_restart("gateway").await;
    wait_until("the metadata service to answer again", Duration::from_secs(10), || async {
        get("/latest/meta-data/local-ipv4").is_ok_and(|ip| ip == fixed_ip(&a).to_string())
    })
    .await;

    // Asking with the other instance's address gets nothing: the port lets only its own address out.
    let spoofed = fixed_ip(&b).to_string();
    lab.exec(&ns, "ip", &["addr", "add", &format!("{spoofed}/32"), "dev", "eth0"]).unwrap();
    lab.exec(&ns, "ip", &["route", "add", "169.254.169.254/32", "via", "10.0.0.1", "src", &spoofed]).unwrap();
    assert!(get("/openstack/latest/meta_data.json").is_err(), "a spoofed request gets no answer");
    lab.exec(&ns, "ip", &["route", "del", "169.254.169.254/32"]).unwrap();
    let meta: Value = serde_json::from_str(&get("/openstack/latest/meta_data.json").unwrap()).unwrap();
    assert_eq!(meta["uuid"], id_of(&a).as_str(), "its own address still reads its own metadata");

    // A restarted nimbus listens again, on the same port of the network host.
    let t = t.restart(lab.options()).await;
    wait_until("the metadata service to answer after a restart", Duration::from_secs(10), || async {
        get("/latest/user-data").is_ok_and(|data| data == "#!/bin/sh\necho hi\n")
    })
    .await;
    t.shutdown().await;
}

// Several threads: pings and HTTP run as blocking child processes while the cloud, in this runtime, answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_let_in_what_their_rules_allow_and_a_change_reaches_the_port_within_a_second() {
    let Some(lab) = Lab::new("sg") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    let alice = t.user_in_mode("flat", "member").await;
    let web = new_group(&alice, "web").await;
    let http_rule = allow_in(
        &alice,
        &web,
        json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}),
    )
    .await;
    let vm = boot_in_group(&alice, "web-1", "web").await;
    let fip = alice.post("/compute/v2.1/os-floating-ips", &json!({"pool": "public"})).await.unwrap();
    let address = fip["floating_ip"]["ip"].clone();
    let floating: Ipv4Addr = address.as_str().unwrap().parse().unwrap();
    alice
        .post(&format!("/compute/v2.1/servers/{}/action", id_of(&vm)), &json!({"addFloatingIp": {"address": address}}))
        .await
        .unwrap();

    // Only TCP 80 from anywhere: HTTP through the floating IP works, ping does not.
    wait_until("HTTP to reach web-1", Duration::from_secs(5), || async {
        http_get(&lab.public, floating).await.is_ok_and(|body| body == "web-1")
    })
    .await;
    assert!(!lab.ping(&lab.public, floating), "no rule lets ICMP in");

    // An ICMP rule: on the port within a second, and ping works.
    allow_in(&alice, &web, json!({"protocol": "icmp", "remote_ip_prefix": "0.0.0.0/0"})).await;
    firewall_reaches(&lab, &lab.host, "the ICMP rule to reach the port", |table| table.contains("ip protocol icmp"))
        .await;
    assert!(lab.ping(&lab.public, floating), "ICMP is let in");

    // A flow the rules allow is not cut by a change that still allows it: a ping running across the
    // replacement of the whole table (a UDP rule added and taken away) loses nothing.
    let pinging = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.public, "busybox", "ping", "-c", "15", "-i", "0.2", "-W", "1"])
        .arg(floating.to_string())
        .output();
    let udp_rule = {
        let udp = allow_in(&alice, &web, json!({"protocol": "udp", "port_range_min": 53})).await;
        firewall_reaches(&lab, &lab.host, "the UDP rule to be added", |table| table.contains("udp dport 53")).await;
        alice.delete(&format!("{RULES}/{udp}")).await.unwrap();
        firewall_reaches(&lab, &lab.host, "the UDP rule to be gone", |table| !table.contains("udp dport 53")).await;
        udp
    };
    let pinged = String::from_utf8_lossy(&pinging.unwrap().stdout).to_string();
    assert!(pinged.contains(" 0% packet loss"), "rule {udp_rule} came and went under a running ping: {pinged}");

    // The TCP rule taken away: new HTTP connections fail.
    alice.delete(&format!("{RULES}/{http_rule}")).await.unwrap();
    firewall_reaches(&lab, &lab.host, "the TCP rule to be gone", |table| !table.contains("tcp dport 80")).await;
    assert!(http_get(&lab.public, floating).await.is_err(), "HTTP is no longer let in");
    assert!(lab.ping(&lab.public, floating), "ICMP still is");

    // Killing the publisher or the host's agent, or restarting nimbus, leaves the same rules in force, and
    // the new incarnations carry the next change.
    let before = firewall_table(&lab, &lab.host);
    t.kill_and_wait_for_restart("firewall").await;
    let host = server(&t.admin, &id_of(&vm)).await.unwrap()["OS-EXT-SRV-ATTR:host"].as_str().unwrap().to_string();
    t.kill_and_wait_for_restart(&format!("compute/{host}")).await;
    let t = t.restart(lab.options()).await;
    assert!(lab.ping(&lab.public, floating), "ICMP is let in after the restart");
    assert!(http_get(&lab.public, floating).await.is_err(), "and HTTP still not");
    assert_eq!(firewall_table(&lab, &lab.host), before, "the restarts changed the rules");
    let alice = t.user_on(vm["tenant_id"].as_str().unwrap(), "member").await;
    allow_in(&alice, &web, json!({"protocol": "tcp", "port_range_min": 80})).await;
    wait_until("HTTP to be let in again", Duration::from_secs(5), || async {
        http_get(&lab.public, floating).await.is_ok_and(|body| body == "web-1")
    })
    .await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_from_members_of_the_same_group_lets_them_in_and_no_one_else() {
    let Some(lab) = Lab::new("sgm") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    let alice = t.user_in_mode("flat", "member").await;
    let app = new_group(&alice, "app").await;
    new_group(&alice, "other").await;
    allow_in(&alice, &app, json!({"protocol": "tcp", "port_range_min": 80, "remote_group_id": app})).await;
    let (a1, a2, o1) = (
        &boot_in_group(&alice, "app-1", "app").await,
        &boot_in_group(&alice, "app-2", "app").await,
        &boot_in_group(&alice, "other-1", "other").await,
    );
    let ns = |s: &Value| lab.instance(&id_of(s));
    wait_until("app-1 to reach app-2 on port 80", Duration::from_secs(5), || async {
        http_get(&ns(a1), fixed_ip(a2)).await.is_ok_and(|body| body == "app-2")
    })
    .await;
    assert_eq!(http_get(&ns(a2), fixed_ip(a1)).await.unwrap(), "app-1", "and the other way round");
    assert!(!lab.ping(&ns(a1), fixed_ip(a2)), "the rule is for TCP 80 only");
    assert!(http_get(&ns(o1), fixed_ip(a1)).await.is_err(), "an instance of another group is not let in");
    assert!(http_get(&ns(o1), fixed_ip(a2)).await.is_err());

    // Moved into the group, the third instance is let in too: membership changes the peers' address sets.
    let action = format!("/compute/v2.1/servers/{}/action", id_of(o1));
    alice.post(&action, &json!({"addSecurityGroup": {"name": "app"}})).await.unwrap();
    wait_until("other-1 to be let in once it is a member", Duration::from_secs(5), || async {
        http_get(&ns(o1), fixed_ip(a1)).await.is_ok_and(|body| body == "app-1")
    })
    .await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_has_its_interfaces_down_and_a_paused_one_answers_nothing_until_undone() {
    let Some(lab) = Lab::new("pwr") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    let alice = t.user_in_mode("flat", "member").await;
    let vm = boot_active(&alice, "pwr-1").await;
    let (id, address) = (id_of(&vm), fixed_ip(&vm));
    let ns = lab.instance(&id);
    let action = format!("/compute/v2.1/servers/{id}/action");
    let answers = || async { http_get(&lab.host, address).await.is_ok_and(|body| body == "pwr-1") };
    let settle = |status: &'static str| {
        let (alice, id) = (&alice, &id);
        async move {
            wait_for_status(alice, id, status).await;
            wait_until(&format!("{id} to settle in {status}"), Duration::from_secs(10), || async {
                server(alice, id).await.is_some_and(|s| s["OS-EXT-STS:task_state"].is_null())
            })
            .await;
        }
    };
    wait_until("pwr-1 to answer", Duration::from_secs(5), answers).await;

    alice.post(&action, &json!({"os-stop": null})).await.unwrap();
    settle("SHUTOFF").await;
    let link = lab.exec(&ns, "ip", &["-o", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("state DOWN"), "{link}");
    assert!(lab.processes(&ns).is_empty(), "nothing runs in a stopped instance: {:?}", lab.processes(&ns));
    assert!(http_get(&lab.host, address).await.is_err(), "a stopped instance does not answer");

    alice.post(&action, &json!({"os-start": null})).await.unwrap();
    settle("ACTIVE").await;
    wait_until("pwr-1 to answer again after its start", Duration::from_secs(5), answers).await;
    let route = lab.exec(&ns, "ip", &["route", "show", "default"]).unwrap();
    assert!(route.contains("via 10.0.0.1"), "the injected route is back: {route}");

    alice.post(&action, &json!({"pause": null})).await.unwrap();
    settle("PAUSED").await;
    assert!(http_get(&lab.host, address).await.is_err(), "a paused instance does not answer");
    alice.post(&action, &json!({"unpause": null})).await.unwrap();
    settle("ACTIVE").await;
    wait_until("pwr-1 to answer after its pause", Duration::from_secs(5), answers).await;

    alice.post(&action, &json!({"reboot": {"type": "HARD"}})).await.unwrap();
    settle("ACTIVE").await;
    wait_until("pwr-1 to answer after its reboot", Duration::from_secs(5), answers).await;
    t.shutdown().await;
}

// Several threads: nslookup runs as a blocking child process while the cloud, in this runtime, answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_a_dhcp_network_resolve_each_other_by_name_through_dnsmasq() {
    let Some(lab) = Lab::new("dns") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    add_network(
        &t,
        json!({"label": "dhcp", "cidr": "10.1.0.0/24", "mode": "flat_dhcp", "bridge": "br101", "dns1": "192.0.2.53"}),
    )
    .await;
    let user = t.user_in_mode("flat_dhcp", "member").await;
    let (a, b) = (boot_active(&user, "dns-a").await, boot_active(&user, "dns-b").await);
    for s in [&a, &b] {
        wait_for_address(&lab, s, fixed_ip(s), 24).await;
    }
    let ns = lab.instance(&id_of(&a));
    for name in ["dns-b", "dns-b.novalocal"] {
        let answer = lab.exec(&ns, "busybox", &["nslookup", name, "10.1.0.1"]).unwrap_or_else(|e| e);
        assert!(answer.contains(&fixed_ip(&b).to_string()), "{name}: {answer}");
    }
    let unknown = lab.exec(&ns, "busybox", &["nslookup", "nobody.novalocal", "10.1.0.1"]).unwrap_or_else(|e| e);
    assert!(unknown.contains("NXDOMAIN"), "an unknown name under the domain does not exist: {unknown}");

    // DHCP told the instance its domain, its network's DNS server first, then dns1.
    let netns = t.cloud.netns.as_ref().unwrap();
    let resolv = netns.instance_dir(id_of(&a).parse().unwrap()).join("resolv.conf");
    let resolv = std::fs::read_to_string(&resolv).unwrap_or_else(|e| panic!("{}: {e}", resolv.display()));
    assert_eq!(resolv, "search novalocal\nnameserver 10.1.0.1\nnameserver 192.0.2.53\n");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_two_nics_answers_on_both_and_a_nic_plugged_or_unplugged_while_it_runs_follows() {
    let Some(lab) = Lab::new("nics") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    let alice = t.user_in_mode("flat", "member").await;
    let mut networks = Vec::new();
    for (name, cidr, dhcp) in [("injected", "10.60.0.0/24", false), ("leased", "10.61.0.0/24", true)] {
        let made = alice.post("/network/v2.0/networks", &json!({"network": {"name": name}})).await.unwrap();
        let id = made["network"]["id"].as_str().unwrap().to_string();
        let subnet = json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4, "enable_dhcp": dhcp}});
        alice.post("/network/v2.0/subnets", &subnet).await.unwrap();
        networks.push(id);
    }
    allow_in(&alice, &group_id(&alice, "default").await, json!({"protocol": "icmp"})).await;
    let image = default_image(&alice).await;
    let body = json!({"server": {"name": "two", "imageRef": image, "flavorRef": "1",
                                 "networks": [{"uuid": networks[0]}, {"uuid": networks[1]}]}});
    let created = alice.post("/compute/v2.1/servers", &body).await.unwrap();
    let vm = wait_for_status(&alice, created["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    let ns = lab.instance(&id_of(&vm));
    let injected: Ipv4Addr = vm["addresses"]["injected"][0]["addr"].as_str().unwrap().parse().unwrap();
    let leased: Ipv4Addr = vm["addresses"]["leased"][0]["addr"].as_str().unwrap().parse().unwrap();
    assert!(injected.to_string().starts_with("10.60.0.") && leased.to_string().starts_with("10.61.0."), "{vm}");

    // eth0 on the first network asked for, with the address injected; eth1 on the second, leased by DHCP.
    assert_eq!(lab.addresses(&ns, "eth0"), vec![format!("{injected}/24")]);
    wait_until("eth1's lease", Duration::from_secs(20), || async {
        lab.addresses(&ns, "eth1") == vec![format!("{leased}/24")]
    })
    .await;
    let routes = lab.exec(&ns, "ip", &["route", "show", "default"]).unwrap();
    assert_eq!(routes.lines().count(), 1, "one default route: {routes}");
    assert!(routes.contains("via 10.60.0.1 dev eth0"), "{routes}");

    // Both addresses answer from the network host, each through its own bridge.
    for address in [injected, leased] {
        wait_until(&format!("{address} to answer"), Duration::from_secs(5), || async { lab.ping(&lab.host, address) })
            .await;
    }
    for (nic, address) in [("eth0", injected), ("eth1", leased)] {
        let mac = lab.exec(&ns, "cat", &[&format!("/sys/class/net/{nic}/address")]).unwrap();
        let shown = vm["addresses"].as_object().unwrap().values().flat_map(|v| v.as_array().unwrap().clone());
        let entry = shown.into_iter().find(|a| a["addr"] == address.to_string()).unwrap();
        assert_eq!(mac.trim(), entry["OS-EXT-IPS-MAC:mac_addr"].as_str().unwrap(), "{nic} has its port's MAC");
    }

    // addFixedIp plugs a third NIC into the running instance; it answers too.
    let made = alice.post("/network/v2.0/networks", &json!({"network": {"name": "third"}})).await.unwrap();
    let third = made["network"]["id"].as_str().unwrap().to_string();
    let subnet = json!({"subnet": {"network_id": third, "cidr": "10.62.0.0/24", "ip_version": 4}});
    alice.post("/network/v2.0/subnets", &subnet).await.unwrap();
    let action = format!("/compute/v2.1/servers/{}/action", id_of(&vm));
    alice.post(&action, &json!({"addFixedIp": {"networkId": third}})).await.unwrap();
    let added: Ipv4Addr = wait_for_value("the third address", Duration::from_secs(20), || async {
        let shown = server(&alice, &id_of(&vm)).await?;
        shown["addresses"]["third"][0]["addr"].as_str().and_then(|a| a.parse().ok())
    })
    .await;
    wait_until("eth2's lease", Duration::from_secs(20), || async {
        lab.addresses(&ns, "eth2") == vec![format!("{added}/24")]
    })
    .await;
    wait_until(&format!("{added} to answer"), Duration::from_secs(5), || async { lab.ping(&lab.host, added) }).await;

    // removeFixedIp takes eth0 away: the others move up, the leased one is eth0 with the default route.
    alice.post(&action, &json!({"removeFixedIp": {"address": injected.to_string()}})).await.unwrap();
    wait_until("the leased address on eth0", Duration::from_secs(20), || async {
        lab.addresses(&ns, "eth0") == vec![format!("{leased}/24")]
            && lab.addresses(&ns, "eth1") == vec![format!("{added}/24")]
    })
    .await;
    assert!(lab.addresses(&ns, "eth2").is_empty(), "two NICs are left");
    for address in [leased, added] {
        wait_until(&format!("{address} to answer"), Duration::from_secs(5), || async { lab.ping(&lab.host, address) })
            .await;
    }
    assert!(!lab.ping(&lab.host, injected), "the removed address answers no more");
    let routes = lab.exec(&ns, "ip", &["route", "show", "default"]).unwrap();
    assert!(routes.lines().count() == 1 && routes.contains("via 10.61.0.1 dev eth0"), "{routes}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networks_mtu_is_its_bridges_and_its_ports_and_dhcp_hands_it_out() {
    let Some(lab) = Lab::new("mtu") else { return };
    let t = TestCloud::start_with(lab.options()).await;
    let alice = t.user_in_mode("flat", "member").await;
    let made = alice.post("/network/v2.0/networks", &json!({"network": {"name": "small", "mtu": 1400}})).await.unwrap();
    let id = made["network"]["id"].as_str().unwrap().to_string();
    assert_eq!(made["network"]["mtu"], 1400);
    let subnet = json!({"subnet": {"network_id": id, "cidr": "10.63.0.0/24", "ip_version": 4}});
    alice.post("/network/v2.0/subnets", &subnet).await.unwrap();
    let image = default_image(&alice).await;
    let body = json!({"server": {"name": "mtu", "imageRef": image, "flavorRef": "1", "networks": [{"uuid": id}]}});
    let created = alice.post("/compute/v2.1/servers", &body).await.unwrap();
    let vm = wait_for_status(&alice, created["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    wait_for_address(&lab, &vm, fixed_ip(&vm), 24).await;
    let ns = lab.instance(&id_of(&vm));

    let bridge = format!("brq{}", &id.replace('-', "")[21..]);
    let link = |ns: &str, dev: &str| lab.exec(ns, "ip", &["-o", "link", "show", dev]).unwrap_or_else(|e| e);
    assert!(link(&lab.host, &bridge).contains("mtu 1400"), "{}", link(&lab.host, &bridge));
    assert!(link(&ns, "eth0").contains("mtu 1400"), "{}", link(&ns, "eth0"));
    // A DHCP exchange of its own, from the instance, shows what the server hands out.
    let script = t.data_dir().join("print-mtu.sh");
    std::fs::write(&script, "#!/bin/sh\n[ \"$1\" = bound ] && echo \"mtu=$mtu\"\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = script.display().to_string();
    let asked = lab.exec(&ns, "busybox", &["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-O", "mtu", "-s", &script]);
    assert!(asked.as_deref().unwrap_or_default().contains("mtu=1400"), "{asked:?}");
    t.shutdown().await;
}
