//! The stock `openstack` CLI against nimbus: the commands a new user runs first.

use std::time::Duration;

use nimbus_tests::openstack;
use nimbus_tests::*;

/// Runs one `openstack` command line (split on whitespace) against the test cloud, off the runtime's threads.
fn cli(t: &TestCloud) -> impl Fn(String) -> tokio::task::JoinHandle<String> + use<> {
    let clouds = t.data_dir().join("clouds.yaml");
    move |line| {
        let clouds = clouds.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = line.split_whitespace().collect();
            openstack::run(&clouds, &args)
        })
    }
}

#[tokio::test]
async fn the_stock_openstack_cli_drives_a_server_lifecycle() {
    let t = TestCloud::start().await;
    let clouds = t.data_dir().join("clouds.yaml");
    assert!(clouds.exists(), "the cloud wrote clouds.yaml");
    let run = |args: &'static [&'static str]| {
        let clouds = clouds.clone();
        tokio::task::spawn_blocking(move || openstack::run(&clouds, args))
    };
    let flavors = run(&["flavor", "list", "-f", "value", "-c", "Name"]).await.unwrap();
    assert_eq!(flavors.lines().collect::<Vec<_>>(), vec!["m1.tiny", "m1.small", "m1.medium", "m1.large"]);
    let images = run(&["image", "list", "-f", "value", "-c", "Name"]).await.unwrap();
    assert_eq!(images.trim(), "cirros-0.6.2-x86_64-disk");

    let created = run(&[
        "server",
        "create",
        "--image",
        "cirros-0.6.2-x86_64-disk",
        "--flavor",
        "m1.tiny",
        "--wait",
        "-f",
        "json",
        "vm1",
    ])
    .await
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let addresses = created["addresses"].to_string();
    assert!(addresses.contains("10.0.0."), "{addresses}");

    let listed = run(&["server", "list", "-f", "value", "-c", "Name", "-c", "Status"]).await.unwrap();
    assert_eq!(listed.trim(), "vm1 ACTIVE");
    run(&["server", "set", "--name", "vm1b", "vm1"]).await.unwrap();
    let listed = run(&["server", "list", "-f", "value", "-c", "Name"]).await.unwrap();
    assert_eq!(listed.trim(), "vm1b");
    run(&["server", "set", "--name", "vm1", "vm1b"]).await.unwrap();
    run(&["server", "set", "--property", "role=web", "--property", "tier=1", "vm1"]).await.unwrap();
    run(&["server", "unset", "--property", "tier", "vm1"]).await.unwrap();
    let properties = run(&["server", "show", "vm1", "-f", "json", "-c", "properties"]).await.unwrap();
    let properties: serde_json::Value = serde_json::from_str(&properties).unwrap();
    assert_eq!(properties["properties"], serde_json::json!({"role": "web"}), "{properties}");
    let shown = run(&["server", "show", "vm1", "-f", "value", "-c", "status", "-c", "flavor"]).await.unwrap();
    assert!(shown.contains("ACTIVE") && shown.contains("m1.tiny"), "{shown}");
    // The power actions, each waited for as a user watches `server show`.
    for (command, status) in [
        (&["server", "stop", "vm1"][..], "SHUTOFF"),
        (&["server", "start", "vm1"][..], "ACTIVE"),
        (&["server", "reboot", "--hard", "vm1"][..], "ACTIVE"),
        (&["server", "pause", "vm1"][..], "PAUSED"),
        (&["server", "unpause", "vm1"][..], "ACTIVE"),
        (&["server", "suspend", "vm1"][..], "SUSPENDED"),
        (&["server", "resume", "vm1"][..], "ACTIVE"),
        (&["server", "reboot", "vm1"][..], "ACTIVE"),
    ] {
        run(command).await.unwrap_or_else(|e| panic!("{command:?}: {e}"));
        wait_until(&format!("{command:?} to end in {status}"), Duration::from_secs(20), || async {
            let shown = run(&["server", "show", "vm1", "-f", "value", "-c", "status", "-c", "OS-EXT-STS:task_state"])
                .await
                .unwrap();
            // The columns come in the CLI's order, not the one asked for.
            let fields: std::collections::BTreeSet<&str> = shown.split_whitespace().collect();
            fields == [status, "None"].into()
        })
        .await;
    }
    let hypervisors =
        run(&["hypervisor", "list", "-f", "value", "-c", "Hypervisor Hostname", "-c", "State"]).await.unwrap();
    assert_eq!(hypervisors.lines().count(), 4, "{hypervisors}");
    assert!(hypervisors.lines().all(|l| l.ends_with(" up")), "{hypervisors}");
    let services = run(&["compute", "service", "list", "-f", "value", "-c", "Binary", "-c", "State"]).await.unwrap();
    assert!(services.lines().count() == 4 && services.lines().all(|l| l == "nova-compute up"), "{services}");
    run(&["compute", "service", "set", "--disable", "--disable-reason", "maintenance", "host-0004", "nova-compute"])
        .await
        .unwrap();
    let status =
        run(&["compute", "service", "list", "--host", "host-0004", "-f", "value", "-c", "Status"]).await.unwrap();
    assert_eq!(status.trim(), "disabled");
    run(&["compute", "service", "set", "--enable", "host-0004", "nova-compute"]).await.unwrap();
    let status =
        run(&["compute", "service", "list", "--host", "host-0004", "-f", "value", "-c", "Status"]).await.unwrap();
    assert_eq!(status.trim(), "enabled");

    run(&["server", "delete", "--wait", "vm1"]).await.unwrap();
    let listed = run(&["server", "list", "-f", "value"]).await.unwrap();
    assert_eq!(listed.trim(), "");
    t.shutdown().await;
}

#[tokio::test]
async fn the_stock_openstack_cli_manages_floating_ips() {
    let t = TestCloud::start().await;
    let clouds = t.data_dir().join("clouds.yaml");
    let run = |args: Vec<String>| {
        let clouds = clouds.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            openstack::run(&clouds, &args)
        })
    };
    let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let networks = run(args("network list -f value -c Name")).await.unwrap();
    assert_eq!(networks.lines().collect::<Vec<_>>(), vec!["private", "public"]);
    run(args("server create --image cirros-0.6.2-x86_64-disk --flavor m1.tiny --wait vm1")).await.unwrap();

    let created = run(args("floating ip create public -f value -c floating_ip_address")).await.unwrap();
    let address = created.trim().to_string();
    assert_eq!(address, "203.0.113.1");
    run(args(&format!("server add floating ip vm1 {address}"))).await.unwrap();
    let listed = run(vec!["floating".into(), "ip".into(), "list".into(), "-f".into(), "json".into()]).await.unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["Floating IP Address"], address.as_str());
    assert!(listed[0]["Fixed IP Address"].as_str().unwrap().starts_with("10.0.0."), "{listed}");
    assert!(!listed[0]["Port"].is_null(), "the association shows its port: {listed}");
    let shown = run(args("server show vm1 -f value -c addresses")).await.unwrap();
    assert!(shown.contains(&address), "{shown}");

    run(args(&format!("server remove floating ip vm1 {address}"))).await.unwrap();
    let shown = run(args("server show vm1 -f value -c addresses")).await.unwrap();
    assert!(!shown.contains(&address), "{shown}");
    run(args(&format!("floating ip delete {address}"))).await.unwrap();
    let listed = run(args("floating ip list -f value")).await.unwrap();
    assert_eq!(listed.trim(), "");
    t.shutdown().await;
}

#[tokio::test]
async fn the_stock_openstack_cli_takes_access_away() {
    let t = TestCloud::start().await;
    let run = cli(&t);
    run("project create cli-demo".into()).await.unwrap();
    run("user create --project cli-demo --password pw cli-alice".into()).await.unwrap();
    run("role add --user cli-alice --project cli-demo member".into()).await.unwrap();
    let alice = nimbus::client::Client::login(t.url(), "cli-alice", "pw", "cli-demo").await.unwrap();
    let servers = "/compute/v2.1/servers";
    assert_eq!(alice.raw(reqwest::Method::GET, servers, None).await.unwrap().0, 200);

    run("role remove --user cli-alice --project cli-demo member".into()).await.unwrap();
    assert_eq!(alice.raw(reqwest::Method::GET, servers, None).await.unwrap().0, 401, "the role is gone at once");
    run("role add --user cli-alice --project cli-demo member".into()).await.unwrap();
    run("user set --disable cli-alice".into()).await.unwrap();
    assert_eq!(alice.raw(reqwest::Method::GET, servers, None).await.unwrap().0, 401, "a disabled user's token");
    run("user set --enable --password pw2 cli-alice".into()).await.unwrap();
    let shown = run("user show cli-alice -f value -c enabled".into()).await.unwrap();
    assert_eq!(shown.trim(), "True");
    let alice = nimbus::client::Client::login(t.url(), "cli-alice", "pw2", "cli-demo").await.unwrap();

    // A member makes an image of a file: uploaded, its size and checksum recorded.
    let disk = t.data_dir().join("alice-disk.raw");
    std::fs::write(&disk, vec![7u8; 1 << 20]).unwrap();
    let as_alice = "--os-username cli-alice --os-password pw2 --os-project-name cli-demo";
    run(format!("{as_alice} image create --disk-format raw --file {} alice-disk", disk.display())).await.unwrap();
    let shown = run(format!("{as_alice} image show alice-disk -f json")).await.unwrap();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!((shown["status"].as_str(), shown["size"].as_u64()), (Some("active"), Some(1 << 20)), "{shown}");
    // The MD5 of a MiB of sevens.
    assert_eq!(shown["checksum"], "24c8b42e9f4d53ef58987e469baaad49", "{shown}");
    let copy = t.data_dir().join("alice-copy.raw");
    run(format!("{as_alice} image save --file {} alice-disk", copy.display())).await.unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&disk).unwrap(), "the data downloads as it was uploaded");

    let token = run("token issue -f value -c id".into()).await.unwrap();
    run(format!("token revoke {}", token.trim())).await.unwrap();
    let (status, _) = reqwest::Client::new()
        .get(format!("{}{servers}", t.url()))
        .header("x-auth-token", token.trim())
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "a revoked token");

    run("user delete cli-alice".into()).await.unwrap();
    assert_eq!(alice.raw(reqwest::Method::GET, servers, None).await.unwrap().0, 401, "a deleted user's token");
    t.shutdown().await;
}

#[tokio::test]
async fn the_stock_openstack_cli_manages_key_pairs() {
    let t = TestCloud::start().await;
    let run = cli(&t);
    // The CLI makes the key itself and imports its public half; `--private-key` keeps the private one.
    let private = t.data_dir().join("k1.pem");
    run(format!("keypair create --private-key {} k1", private.display())).await.unwrap();
    let private = std::fs::read_to_string(&private).unwrap();
    assert!(private.contains("PRIVATE KEY"), "{private}");
    let public = t.data_dir().join("k2.pub");
    std::fs::write(&public, format!("{}\n", ssh_public_key())).unwrap();
    run(format!("keypair create --public-key {} k2", public.display())).await.unwrap();
    let listed = run("keypair list -f value -c Name".into()).await.unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), vec!["k1", "k2"]);
    let shown = run("keypair show k2 -f value -c fingerprint".into()).await.unwrap();
    assert_eq!(shown.trim(), "db:b4:36:8b:ea:65:bb:f6:de:83:87:8a:6b:68:c5:08");

    run("server create --image cirros-0.6.2-x86_64-disk --flavor m1.tiny --key-name k1 --wait vm1".into())
        .await
        .unwrap();
    let shown = run("server show vm1 -f value -c key_name".into()).await.unwrap();
    assert_eq!(shown.trim(), "k1");
    run("keypair delete k1 k2".into()).await.unwrap();
    let listed = run("keypair list -f value".into()).await.unwrap();
    assert_eq!(listed.trim(), "");
    t.shutdown().await;
}

/// Made by `ssh-keygen -t ed25519`; `ssh-keygen -l -E md5` gives the fingerprint the test expects.
fn ssh_public_key() -> &'static str {
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPBefgBEwFmamFM1wrSTgBJ4uGdS8OnEPjgXqZchC+CQ alice@host"
}

#[tokio::test]
async fn the_stock_openstack_cli_manages_security_groups() {
    let t = TestCloud::start().await;
    let run = cli(&t);
    run("security group create web".into()).await.unwrap();
    run("security group rule create --protocol tcp --dst-port 80 web".into()).await.unwrap();
    run("security group rule create --protocol icmp --remote-group default web".into()).await.unwrap();
    let listed = run("security group list -f value -c Name".into()).await.unwrap();
    let mut names: Vec<&str> = listed.lines().collect();
    names.sort();
    assert_eq!(names, vec!["default", "web"]);
    let rules = run("security group rule list web -f json".into()).await.unwrap();
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let rules = rules.as_array().unwrap();
    assert_eq!(rules.len(), 3, "egress, tcp 80 and icmp: {rules:?}");
    assert!(rules.iter().any(|r| r["IP Protocol"] == "tcp" && r["Port Range"] == "80:80"), "{rules:?}");

    run("server create --image cirros-0.6.2-x86_64-disk --flavor m1.tiny --security-group web --wait vm1".into())
        .await
        .unwrap();
    let shown = run("server show vm1 -f json".into()).await.unwrap();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["security_groups"], serde_json::json!([{"name": "web"}]), "{shown}");
    run("server add security group vm1 default".into()).await.unwrap();
    run("server remove security group vm1 web".into()).await.unwrap();
    let shown = run("server show vm1 -f value -c security_groups".into()).await.unwrap();
    assert!(shown.contains("default") && !shown.contains("web"), "{shown}");
    run("server delete --wait vm1".into()).await.unwrap();
    run("security group delete web".into()).await.unwrap();
    let listed = run("security group list -f value -c Name".into()).await.unwrap();
    assert_eq!(listed.trim(), "default");
    t.shutdown().await;
}

#[tokio::test]
async fn the_stock_openstack_cli_creates_networks_subnets_ports_and_a_server_on_two_networks() {
    let t = TestCloud::start().await;
    let run = cli(&t);
    let ok = |line: &str| {
        let task = run(line.to_string());
        let line = line.to_string();
        async move { task.await.unwrap_or_else(|e| panic!("{line}: {e}")) }
    };
    ok("network create red --mtu 1400").await;
    let mtu = ok("network show red -f value -c mtu").await;
    assert_eq!(mtu.trim(), "1400");
    ok("subnet create --network red --subnet-range 10.70.0.0/24 red-sub").await;
    ok("network create blue").await;
    ok("subnet create --network blue --subnet-range 10.71.0.0/24 --no-dhcp blue-sub").await;
    let subnets = ok("subnet list -f value -c Name -c Subnet").await;
    assert!(subnets.contains("red-sub 10.70.0.0/24") && subnets.contains("blue-sub 10.71.0.0/24"), "{subnets}");
    let port = ok("port create --network red --fixed-ip ip-address=10.70.0.40 -f json p1").await;
    let port: serde_json::Value = serde_json::from_str(&port).unwrap();
    assert!(port["fixed_ips"].to_string().contains("10.70.0.40"), "{port}");

    let created = ok("server create --image cirros-0.6.2-x86_64-disk --flavor m1.tiny --network red --network blue \
                      --wait -f json vm2")
    .await;
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let addresses = created["addresses"].to_string();
    assert!(addresses.contains("10.70.0.") && addresses.contains("10.71.0."), "two addresses: {addresses}");
    let ports = ok("port list --server vm2 -f value -c ID").await;
    assert_eq!(ports.lines().count(), 2, "{ports}");

    ok("server create --image cirros-0.6.2-x86_64-disk --flavor m1.tiny --port p1 --wait vm3").await;
    let shown = ok("server show vm3 -f value -c addresses").await;
    assert!(shown.contains("10.70.0.40"), "the server has the port's address: {shown}");
    ok("server delete --wait vm2 vm3").await;
    let status = ok("port show p1 -f value -c status").await;
    assert_eq!(status.trim(), "DOWN", "the port outlives its server");
    ok("port delete p1").await;
    ok("subnet delete red-sub blue-sub").await;
    ok("network delete red blue").await;
    let networks = ok("network list -f value -c Name").await;
    assert_eq!(networks.lines().collect::<Vec<_>>(), vec!["private", "public"]);
    t.shutdown().await;
}

#[tokio::test]
async fn openstacksdk_boots_a_server_on_two_networks_and_stops_and_starts_it() {
    let t = TestCloud::start().await;
    let clouds = t.data_dir().join("clouds.yaml");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sdk_two_networks.py");
    let out = tokio::task::spawn_blocking(move || openstack::run_sdk_script(&clouds, &script)).await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the script's last line is its JSON report ({e}): {out}"));
    let addresses: Vec<&str> = seen["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(addresses.len(), 2, "{seen}");
    assert!(addresses[0].starts_with("10.80.0.") && addresses[1].starts_with("10.81.0."), "{seen}");
    assert_eq!(seen["ports"], seen["addresses"], "the ports are the server's addresses: {seen}");
    assert_eq!((seen["stopped"].as_str(), seen["started"].as_str()), (Some("SHUTOFF"), Some("ACTIVE")), "{seen}");
    assert_eq!(seen["networks_left"], serde_json::json!([]), "{seen}");
    assert!(store_violations(&t.cloud.store).is_empty(), "{:?}", store_violations(&t.cloud.store));
    t.shutdown().await;
}
