//! Floating IPs: allocate, associate, move, disassociate, release; project isolation, quotas, exhaustion;
//! the NAT table the sim driver recorded. Both API shapes: nova-network's `os-floating-ips` and Network v2.0.

use nimbus_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

fn action(server: &Value) -> String {
    format!("/compute/v2.1/servers/{}/action", server["id"].as_str().unwrap())
}

fn floating_of(server: &Value) -> Vec<String> {
    server["addresses"]
        .as_object()
        .into_iter()
        .flat_map(|n| n.values())
        .flat_map(|list| list.as_array().unwrap().iter())
        .filter(|a| a["OS-EXT-IPS:type"] == "floating")
        .map(|a| a["addr"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_floating_ip_is_allocated_associated_moved_and_released() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let (vm1, vm2) = (boot_active(&alice, "vm1").await, boot_active(&alice, "vm2").await);
    let pools = alice.get("/compute/v2.1/os-floating-ip-pools").await.unwrap();
    assert_eq!(pools["floating_ip_pools"], json!([{"name": "public"}]));
    let fip =
        alice.post("/compute/v2.1/os-floating-ips", &json!({"pool": "public"})).await.unwrap()["floating_ip"].clone();
    let address = fip["ip"].as_str().unwrap().to_string();
    assert_eq!(address, "203.0.113.1");

    alice.post(&action(&vm1), &json!({"addFloatingIp": {"address": address}})).await.unwrap();
    let shown = server(&alice, vm1["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(floating_of(&shown), vec![address.clone()]);
    let fixed = fixed_addresses(&shown).into_iter().find(|a| a.starts_with("10.")).unwrap();
    let nat = t.cloud.sim().state().nat.floating;
    assert_eq!(nat.len(), 1);
    let rule = nat.first().unwrap();
    assert_eq!(
        (rule.floating.to_string(), rule.fixed.to_string(), rule.interface.as_str()),
        (address.clone(), fixed, "eth0")
    );

    // Associated with another server of the project, it moves there, as nova does: never on both.
    alice.post(&action(&vm2), &json!({"addFloatingIp": {"address": address}})).await.unwrap();
    assert!(floating_of(&server(&alice, vm1["id"].as_str().unwrap()).await.unwrap()).is_empty());
    assert_eq!(floating_of(&server(&alice, vm2["id"].as_str().unwrap()).await.unwrap()), vec![address.clone()]);
    let nat = t.cloud.sim().state().nat.floating;
    assert_eq!(nat.len(), 1);
    assert_eq!(nat.first().unwrap().fixed.to_string(), fixed_addresses(&vm2)[0]);
    alice.post(&action(&vm2), &json!({"removeFloatingIp": {"address": address}})).await.unwrap();
    assert!(t.cloud.sim().state().nat.floating.is_empty());
    let (status, _) =
        alice.raw(Method::POST, &action(&vm1), Some(&json!({"removeFloatingIp": {"address": address}}))).await.unwrap();
    assert_eq!(status.as_u16(), 404, "removing an address the server does not have");
    alice.post(&action(&vm2), &json!({"addFloatingIp": {"address": address}})).await.unwrap();
    let nat = t.cloud.sim().state().nat.floating;
    assert_eq!(nat.first().unwrap().fixed.to_string(), fixed_addresses(&vm2)[0]);

    // Releasing an associated address disassociates it in the same transaction.
    alice.delete(&format!("/compute/v2.1/os-floating-ips/{}", fip["id"].as_str().unwrap())).await.unwrap();
    assert!(alice.get("/compute/v2.1/os-floating-ips").await.unwrap()["floating_ips"].as_array().unwrap().is_empty());
    assert!(t.cloud.sim().state().nat.floating.is_empty());
    assert!(floating_of(&server(&alice, vm2["id"].as_str().unwrap()).await.unwrap()).is_empty());
    t.shutdown().await;
}

#[tokio::test]
async fn floating_ips_are_private_to_their_project_and_follow_servers() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let bob = t.user_with_role("member").await;
    let alice_vm = boot_active(&alice, "a").await;
    let bob_vm = boot_active(&bob, "b").await;
    let fip = alice.post("/compute/v2.1/os-floating-ips", &json!({})).await.unwrap()["floating_ip"].clone();
    let (id, address) = (fip["id"].as_str().unwrap().to_string(), fip["ip"].as_str().unwrap().to_string());

    let (status, _) = bob.raw(Method::GET, &format!("/compute/v2.1/os-floating-ips/{id}"), None).await.unwrap();
    assert_eq!(status.as_u16(), 404, "another project's floating IP is not found");
    let (status, _) =
        bob.raw(Method::POST, &action(&bob_vm), Some(&json!({"addFloatingIp": {"address": address}}))).await.unwrap();
    assert_eq!(status.as_u16(), 404);
    let (status, _) = bob.raw(Method::DELETE, &format!("/compute/v2.1/os-floating-ips/{id}"), None).await.unwrap();
    assert_eq!(status.as_u16(), 404);
    // Alice cannot put it on Bob's server either: she cannot even see it.
    let (status, _) =
        alice.raw(Method::POST, &action(&bob_vm), Some(&json!({"addFloatingIp": {"address": address}}))).await.unwrap();
    assert_eq!(status.as_u16(), 404);

    // Associating to a deleted server.
    let gone = boot_active(&alice, "gone").await;
    alice.delete(&format!("/compute/v2.1/servers/{}", gone["id"].as_str().unwrap())).await.unwrap();
    wait_for_gone(&alice, gone["id"].as_str().unwrap()).await;
    let (status, body) =
        alice.raw(Method::POST, &action(&gone), Some(&json!({"addFloatingIp": {"address": address}}))).await.unwrap();
    assert_eq!(status.as_u16(), 404, "{body}");

    // Deleting a server disassociates its floating IP; the address stays with the project.
    alice.post(&action(&alice_vm), &json!({"addFloatingIp": {"address": address}})).await.unwrap();
    alice.delete(&format!("/compute/v2.1/servers/{}", alice_vm["id"].as_str().unwrap())).await.unwrap();
    wait_for_gone(&alice, alice_vm["id"].as_str().unwrap()).await;
    let listed = alice.get("/compute/v2.1/os-floating-ips").await.unwrap();
    assert_eq!(listed["floating_ips"][0]["instance_id"], Value::Null);
    assert!(t.cloud.sim().state().nat.floating.is_empty());
    let violations = store_violations(&t.cloud.store);
    assert!(violations.is_empty(), "{violations:#?}");
    t.shutdown().await;
}

#[tokio::test]
async fn quotas_and_exhausted_pools_get_clear_errors() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    for _ in 0..10 {
        alice.post("/compute/v2.1/os-floating-ips", &json!({})).await.unwrap();
    }
    let (status, body) = alice.raw(Method::POST, "/compute/v2.1/os-floating-ips", Some(&json!({}))).await.unwrap();
    assert_eq!(status.as_u16(), 403, "{body}");
    assert!(body.to_string().contains("Quota exceeded for floating_ips"), "{body}");
    let public = alice.get("/network/v2.0/networks?router:external=true").await.unwrap()["networks"][0]["id"].clone();
    let (status, body) = alice
        .raw(Method::POST, "/network/v2.0/floatingips", Some(&json!({"floatingip": {"floating_network_id": public}})))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 409, "{body}");
    assert_eq!(body["NeutronError"]["type"], "OverQuota");

    // Instances count too: 10 by default.
    let image = default_image(&alice).await;
    let many =
        json!({"server": {"name": "many", "imageRef": image, "flavorRef": "1", "min_count": 11, "max_count": 11}});
    let (status, body) = alice.raw(Method::POST, "/compute/v2.1/servers", Some(&many)).await.unwrap();
    assert_eq!(status.as_u16(), 403, "{body}");
    assert!(body.to_string().contains("Quota exceeded for instances"), "{body}");

    // A pool of two addresses runs out on the third.
    t.admin
        .post(
            "/compute/v2.1/os-floating-ips-bulk",
            &json!({"floating_ips_bulk_create": {"ip_range": "198.51.100.0/30", "pool": "tiny"}}),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        t.admin.post("/compute/v2.1/os-floating-ips", &json!({"pool": "tiny"})).await.unwrap();
    }
    let (status, body) =
        t.admin.raw(Method::POST, "/compute/v2.1/os-floating-ips", Some(&json!({"pool": "tiny"}))).await.unwrap();
    assert_eq!(status.as_u16(), 409, "{body}");
    assert!(body.to_string().contains("No more floating IPs available in pool tiny"), "{body}");
    let (status, body) = t
        .admin
        .raw(
            Method::POST,
            "/compute/v2.1/os-floating-ips-bulk",
            Some(&json!({"floating_ips_bulk_create": {"ip_range": "198.51.100.0/29", "pool": "clash"}})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 409, "overlapping pools: {body}");
    t.shutdown().await;
}

#[tokio::test]
async fn the_network_api_manages_floating_ips_through_ports() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let vm = boot_active(&alice, "vm").await;
    let networks = alice.get("/network/v2.0/networks").await.unwrap()["networks"].as_array().unwrap().clone();
    let names: Vec<&str> = networks.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["private", "public"]);
    let public = networks.iter().find(|n| n["router:external"] == true).unwrap()["id"].clone();
    let subnets =
        alice.get(&format!("/network/v2.0/subnets?network_id={}", networks[0]["id"].as_str().unwrap())).await.unwrap();
    assert_eq!(subnets["subnets"][0]["cidr"], "10.0.0.0/24");
    let ports = alice.get(&format!("/network/v2.0/ports?device_id={}", vm["id"].as_str().unwrap())).await.unwrap();
    let port = ports["ports"][0].clone();
    assert_eq!(port["fixed_ips"][0]["ip_address"].as_str().unwrap(), fixed_addresses(&vm)[0]);

    let created =
        alice.post("/network/v2.0/floatingips", &json!({"floatingip": {"floating_network_id": public}})).await.unwrap();
    let fip = created["floatingip"].clone();
    assert_eq!(fip["status"], "DOWN");
    let path = format!("/network/v2.0/floatingips/{}", fip["id"].as_str().unwrap());
    let updated = alice.send(Method::PUT, &path, Some(&json!({"floatingip": {"port_id": port["id"]}}))).await.unwrap();
    assert_eq!(updated["floatingip"]["port_id"], port["id"]);
    assert_eq!(updated["floatingip"]["fixed_ip_address"], port["fixed_ips"][0]["ip_address"]);
    let by_port =
        alice.get(&format!("/network/v2.0/floatingips?port_id={}", port["id"].as_str().unwrap())).await.unwrap();
    assert_eq!(by_port["floatingips"].as_array().unwrap().len(), 1);
    let updated = alice.send(Method::PUT, &path, Some(&json!({"floatingip": {"port_id": null}}))).await.unwrap();
    assert_eq!(updated["floatingip"]["port_id"], Value::Null);
    alice.delete(&path).await.unwrap();
    let (status, body) = alice.raw(Method::GET, &path, None).await.unwrap();
    assert_eq!(status.as_u16(), 404);
    assert_eq!(body["NeutronError"]["type"], "NotFound");
    let (status, body) = alice
        .raw(
            Method::POST,
            "/network/v2.0/floatingips",
            Some(&json!({"floatingip": {"floating_network_id": networks[0]["id"]}})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400, "floating IPs come from external networks: {body}");
    t.shutdown().await;
}

#[tokio::test]
async fn auto_assigned_floating_ips_come_and_go_with_their_instances() {
    let t = TestCloud::start_with(Options { auto_assign_floating_ip: true, ..Options::default() }).await;
    let alice = t.user_with_role("member").await;
    let vm = boot_active(&alice, "auto").await;
    let floating = floating_of(&vm);
    assert_eq!(floating, vec!["203.0.113.1".to_string()]);
    assert_eq!(t.cloud.sim().state().nat.floating.len(), 1);
    // Not counted against the quota: ten more can still be allocated.
    for _ in 0..10 {
        alice.post("/compute/v2.1/os-floating-ips", &json!({})).await.unwrap();
    }
    let (status, body) = alice.raw(Method::POST, "/compute/v2.1/os-floating-ips", Some(&json!({}))).await.unwrap();
    assert_eq!(status.as_u16(), 403, "ten allocated addresses fill the quota: {body}");
    // One given at boot stays with its instance: the project cannot keep it outside its quota.
    let mine = alice.get("/compute/v2.1/os-floating-ips").await.unwrap()["floating_ips"].as_array().unwrap().clone();
    let id = mine.iter().find(|f| f["ip"] == floating[0]).unwrap()["id"].as_str().unwrap().to_string();
    let remove = json!({"removeFloatingIp": {"address": floating[0]}});
    let action = format!("/compute/v2.1/servers/{}/action", vm["id"].as_str().unwrap());
    let (status, body) = alice.raw(Method::POST, &action, Some(&remove)).await.unwrap();
    assert_eq!(status.as_u16(), 403, "{body}");
    assert!(body.to_string().contains("Cannot disassociate auto assigned floating IP"), "{body}");
    let (status, _) = alice.raw(Method::DELETE, &format!("/compute/v2.1/os-floating-ips/{id}"), None).await.unwrap();
    assert_eq!(status.as_u16(), 403, "releasing it would disassociate it");
    assert_eq!(t.cloud.sim().state().nat.floating.len(), 1, "still forwarded");
    alice.delete(&format!("/compute/v2.1/servers/{}", vm["id"].as_str().unwrap())).await.unwrap();
    wait_for_gone(&alice, vm["id"].as_str().unwrap()).await;
    assert!(t.cloud.sim().state().nat.floating.is_empty());
    let mine = alice.get("/compute/v2.1/os-floating-ips").await.unwrap()["floating_ips"].as_array().unwrap().clone();
    assert!(mine.iter().all(|f| f["ip"] != "203.0.113.1"), "the auto-assigned address went back to the pool");
    let violations = store_violations(&t.cloud.store);
    assert!(violations.is_empty(), "{violations:#?}");
    t.shutdown().await;
}

#[tokio::test]
async fn quotas_are_shown_with_their_use_and_can_be_raised_by_an_admin() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let token = reqwest::Client::new()
        .get(format!("{}/identity/v3/auth/tokens", t.url()))
        .header("x-auth-token", alice.token())
        .header("x-subject-token", alice.token())
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let project = token["token"]["project"]["id"].as_str().unwrap().to_string();
    boot_active(&alice, "counted").await;
    alice.post("/compute/v2.1/os-floating-ips", &json!({})).await.unwrap();
    let detail = alice.get(&format!("/compute/v2.1/os-quota-sets/{project}/detail")).await.unwrap();
    let q = &detail["quota_set"];
    assert_eq!((q["instances"]["limit"].clone(), q["instances"]["in_use"].clone()), (json!(10), json!(1)));
    assert_eq!((q["cores"]["in_use"].clone(), q["ram"]["in_use"].clone()), (json!(1), json!(512)));
    assert_eq!((q["floating_ips"]["in_use"].clone(), q["fixed_ips"]["limit"].clone()), (json!(1), json!(-1)));

    let (status, _) = alice
        .raw(
            Method::PUT,
            &format!("/compute/v2.1/os-quota-sets/{project}"),
            Some(&json!({"quota_set": {"instances": 50}})),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 403, "members cannot raise their own quota");
    let raised = t
        .admin
        .send(
            Method::PUT,
            &format!("/compute/v2.1/os-quota-sets/{project}"),
            Some(&json!({"quota_set": {"instances": 12, "floating_ips": -1}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (raised["quota_set"]["instances"].clone(), raised["quota_set"]["floating_ips"].clone()),
        (json!(12), json!(-1))
    );
    let image = default_image(&alice).await;
    let eleven =
        json!({"server": {"name": "more", "imageRef": image, "flavorRef": "1", "min_count": 11, "max_count": 11}});
    alice.post("/compute/v2.1/servers", &eleven).await.unwrap();
    let (status, body) = alice.raw(Method::POST, "/compute/v2.1/servers", Some(&eleven)).await.unwrap();
    assert_eq!(status.as_u16(), 403, "12 is the new limit: {body}");
    assert!(body.to_string().contains("requested 11, but already used 12 of 12"), "the whole request: {body}");
    let (status, body) = t
        .admin
        .raw(Method::PUT, &format!("/compute/v2.1/os-quota-sets/{project}"), Some(&json!({"quota_set": {"cores": -5}})))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400, "{body}");
    t.shutdown().await;
}
