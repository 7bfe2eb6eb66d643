//! The metadata service's documents for a server created with a key pair and user data, as the instance
//! holding the address finds them, and nothing for an address no instance holds.

use std::net::Ipv4Addr;

use nimbus_actors::app::metadata::{self, Document};
use nimbus_tests::*;
use reqwest::Method;
use serde_json::{Value, json};

fn json_of(document: &Document) -> Value {
    assert!(document.json);
    serde_json::from_slice(&document.body).unwrap()
}

fn text_of(document: &Document) -> String {
    assert!(!document.json);
    String::from_utf8(document.body.clone()).unwrap()
}

#[tokio::test]
async fn an_instance_reads_its_own_metadata_in_both_formats() {
    let t = TestCloud::start().await;
    let erin = t.user_with_role("member").await;
    let key = erin.post("/compute/v2.1/os-keypairs", &json!({"keypair": {"name": "erins"}})).await.unwrap();
    let public_key = key["keypair"]["public_key"].as_str().unwrap().to_string();
    let image = default_image(&erin).await;
    // "#!/bin/sh\necho hi\n", base64-encoded with a line break, as some clients send it.
    let body = json!({"server": {"name": "Web 1", "imageRef": image, "flavorRef": "1", "key_name": "erins",
        "user_data": "IyEvYmluL3NoCmVj\naG8gaGkK", "metadata": {"role": "web"}}});
    let created = erin.post("/compute/v2.1/servers", &body).await.unwrap();
    let id = created["server"]["id"].as_str().unwrap().to_string();
    let server = wait_for_status(&erin, &id, "ACTIVE").await;
    let address: Ipv4Addr = fixed_addresses(&server)[0].parse().unwrap();
    // The default network, 10.0.0.0/24, answers at its gateway.
    let gateway = Ipv4Addr::new(10, 0, 0, 1);
    let ask = |path: &str| metadata::answer(&t.cloud.app, gateway, address, path);

    let meta = json_of(&ask("/openstack/latest/meta_data.json").unwrap());
    assert_eq!(meta["uuid"], id.as_str());
    assert_eq!(meta["name"], "Web 1");
    assert_eq!(meta["public_keys"]["erins"], public_key.as_str());
    assert_eq!(meta["keys"][0]["data"], public_key.as_str());
    assert_eq!(meta["meta"], json!({"role": "web"}), "the server's metadata");
    assert_eq!(meta["hostname"], "web-1.novalocal", "its DHCP hostname under the DHCP domain");
    let dated = json_of(&ask("/openstack/2012-08-10/meta_data.json").unwrap());
    assert_eq!(dated["uuid"], id.as_str(), "dated versions answer as latest does");
    let networks = json_of(&ask("/openstack/latest/network_data.json").unwrap());
    assert_eq!(networks["networks"][0]["ip_address"], address.to_string());
    assert_eq!(
        networks["links"][0]["ethernet_mac_address"],
        server["addresses"]["private"][0]["OS-EXT-IPS-MAC:mac_addr"]
    );
    assert_eq!(text_of(&ask("/openstack/latest").unwrap()), "meta_data.json\nnetwork_data.json\nuser_data\n");
    assert_eq!(text_of(&ask("/openstack/latest/user_data").unwrap()), "#!/bin/sh\necho hi\n");

    assert_eq!(text_of(&ask("/latest/user-data").unwrap()), "#!/bin/sh\necho hi\n");
    let listing = text_of(&ask("/latest/meta-data/").unwrap());
    assert!(listing.contains("instance-id\n") && listing.contains("public-keys/\n"), "{listing}");
    assert!(!listing.contains("public-ipv4"), "no floating IP, no public address: {listing}");
    let ec2_id = text_of(&ask("/latest/meta-data/instance-id").unwrap());
    assert!(ec2_id.starts_with("i-") && ec2_id.len() == 19, "{ec2_id}");
    assert_eq!(text_of(&ask("/latest/meta-data/local-ipv4").unwrap()), address.to_string());
    assert_eq!(text_of(&ask("/latest/meta-data/public-keys").unwrap()), "0=erins");
    assert_eq!(text_of(&ask("/2009-04-04/meta-data/public-keys/0/openssh-key").unwrap()), public_key);
    assert_eq!(text_of(&ask("/latest/meta-data/security-groups").unwrap()), "default");

    // A renamed server keeps the hostname its DHCP server knows it by.
    let hostname = text_of(&ask("/latest/meta-data/hostname").unwrap());
    erin.send(Method::PUT, &format!("/compute/v2.1/servers/{id}"), Some(&json!({"server": {"name": "Renamed"}})))
        .await
        .unwrap();
    assert_eq!(json_of(&ask("/openstack/latest/meta_data.json").unwrap())["name"], "Renamed");
    assert_eq!(text_of(&ask("/latest/meta-data/hostname").unwrap()), hostname);

    for path in
        ["/latest/meta-data/public-ipv4", "/openstack/latest/vendor_data.json", "/secrets", "/latest/meta-data/x"]
    {
        assert!(ask(path).is_err(), "{path} is not there");
    }
    // An address no instance holds learns nothing.
    let other = Ipv4Addr::from(u32::from(address) + 100);
    assert!(metadata::answer(&t.cloud.app, gateway, other, "/openstack/latest/meta_data.json").is_err());
    // Nor does the right address on another network's gateway.
    let elsewhere = Ipv4Addr::new(10, 9, 0, 1);
    assert!(metadata::answer(&t.cloud.app, elsewhere, address, "/openstack/latest/meta_data.json").is_err());
    t.shutdown().await;
}

#[tokio::test]
async fn user_data_must_be_base64_and_at_most_64_kib() {
    let t = TestCloud::start().await;
    let frank = t.user_with_role("member").await;
    let image = default_image(&frank).await;
    let server = |user_data: Value| json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "1", "user_data": user_data}});
    use base64::Engine;
    let big = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 64 * 1024 + 1]);
    let fits = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 64 * 1024]);
    for (user_data, expected, why) in [
        (json!("not base64!"), 400, "not base64"),
        (json!(big), 400, "over 64 KiB decoded"),
        (json!(42), 400, "not a string"),
        (json!(fits), 202, "exactly 64 KiB"),
    ] {
        let (got, answer) = frank.raw(Method::POST, "/compute/v2.1/servers", Some(&server(user_data))).await.unwrap();
        assert_eq!(got.as_u16(), expected, "{why}: {answer}");
    }
    t.shutdown().await;
}

#[tokio::test]
async fn network_data_describes_every_interface_with_its_mtu_and_one_default_route() {
    let t = TestCloud::start().await;
    let erin = t.user_with_role("member").await;
    let made = erin.post("/network/v2.0/networks", &json!({"network": {"name": "small", "mtu": 1400}})).await.unwrap();
    let small = made["network"]["id"].as_str().unwrap().to_string();
    let subnet = json!({"subnet": {"network_id": small, "cidr": "10.64.0.0/24", "ip_version": 4}});
    erin.post("/network/v2.0/subnets", &subnet).await.unwrap();
    let private = erin.get("/network/v2.0/networks?name=private").await.unwrap()["networks"][0]["id"].clone();
    let image = default_image(&erin).await;
    let body = json!({"server": {"name": "two", "imageRef": image, "flavorRef": "1",
                                 "networks": [{"uuid": private}, {"uuid": small}]}});
    let created = erin.post("/compute/v2.1/servers", &body).await.unwrap();
    let server = wait_for_status(&erin, created["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    let address: Ipv4Addr = server["addresses"]["private"][0]["addr"].as_str().unwrap().parse().unwrap();
    let document =
        metadata::answer(&t.cloud.app, Ipv4Addr::new(10, 0, 0, 1), address, "/openstack/latest/network_data.json");
    let data = json_of(&document.unwrap());
    let mtus: Vec<&Value> = data["links"].as_array().unwrap().iter().map(|l| &l["mtu"]).collect();
    assert_eq!(mtus, [&Value::Null, &json!(1400)], "{data}");
    let networks = data["networks"].as_array().unwrap();
    assert_eq!(networks[1]["netmask"], "255.255.255.0");
    assert_eq!(networks[0]["routes"][0]["gateway"], "10.0.0.1");
    assert_eq!(networks[1]["routes"], json!([]), "one default route, on the first interface");
    t.shutdown().await;
}

#[tokio::test]
async fn the_dhcp_domain_names_instances_in_the_dhcp_servers_and_the_metadata() {
    let options = Options { dhcp_domain: "cloud.test".into(), ..Options::default() };
    let t = TestCloud::start_with(options).await;
    let dhcp_net = json!({"network": {"label": "dhcp", "cidr": "10.1.0.0/24", "mode": "flat_dhcp", "bridge": "br101"}});
    t.admin.post("/compute/v2.1/os-networks", &dhcp_net).await.unwrap();
    let user = t.user_in_mode("flat_dhcp", "member").await;
    let server = boot_active(&user, "named").await;
    let address: Ipv4Addr = fixed_addresses(&server)[0].parse().unwrap();
    let document = metadata::answer(&t.cloud.app, Ipv4Addr::new(10, 1, 0, 1), address, "/latest/meta-data/hostname");
    assert_eq!(text_of(&document.unwrap()), "named.cloud.test");
    let domains: Vec<String> = t.cloud.sim().state().segments.values().map(|s| s.dhcp_domain.clone()).collect();
    assert!(!domains.is_empty() && domains.iter().all(|d| d == "cloud.test"), "{domains:?}");
    t.shutdown().await;
}
