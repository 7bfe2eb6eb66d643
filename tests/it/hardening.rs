//! Hardening: failed logins are throttled and locked out, access that is taken away is gone at the next
//! request, slow or idle clients cannot hold the API, failed creates leave nothing behind, and the data
//! directory is private.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nimbus::client::Client;
use nimbus_actors::cloud::{Cloud, CloudConfig};
use nimbus_actors::gateway::ServerLimits;
use nimbus_actors::timing::LoginPolicy;
use nimbus_runtime::Namespace;
use nimbus_tests::{Options, TestCloud, create_server, new_project, new_user_on, wait_for_status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn login_status(t: &TestCloud, user: &str, password: &str, project: &str) -> (u16, String) {
    match Client::login(t.url(), user, password, project).await {
        Ok(_) => (201, String::new()),
        Err(nimbus::client::ClientError::Api { status, message, .. }) => (status.as_u16(), message),
        Err(e) => panic!("login did not get an answer: {e}"),
    }
}

/// Short waits, so the test can sit them out.
fn quick_lockout(free_failures_per_source: u32) -> Options {
    let mut options = Options::default();
    options.timing.login = LoginPolicy {
        free_failures_per_user: 2,
        lockout_failure_attempts: 5,
        free_failures_per_source,
        first_delay: Duration::from_millis(300),
        max_delay: Duration::from_secs(1),
        ..LoginPolicy::default()
    };
    options
}

/// A login that sits out every 429 (as its Retry-After says); returns the final status and message, and how
/// many times it was told to wait.
async fn patient_login(t: &TestCloud, user: &str, password: &str, project: &str) -> (u16, String, usize) {
    let mut waits = 0;
    loop {
        let response = reqwest::Client::new()
            .post(format!("{}/identity/v3/auth/tokens", t.url()))
            .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": user, "password": password}}},
                           "scope": {"project": {"id": project}}}}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status != 429 {
            let message = response.text().await.unwrap();
            return (status, message, waits);
        }
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        waits += 1;
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
    }
}

#[tokio::test]
async fn a_guessed_account_is_slowed_down_then_locked() {
    let t = TestCloud::start_with(quick_lockout(100)).await;
    let project = new_project(&t.admin, "flat").await;
    let alice = new_user_on(&t.admin, &project, "member").await;
    let bob = new_user_on(&t.admin, &project, "member").await;
    let mut waits = 0;
    for _ in 0..5 {
        let (status, message, waited) = patient_login(&t, &alice.user, "guess", &project).await;
        assert_eq!(status, 401, "{message}");
        waits += waited;
    }
    assert!(waits >= 2, "the guesses beyond the free two had to wait: {waits}");
    // Five failures lock alice out, even with her right password; bob is not affected.
    let (status, message) = login_status(&t, &alice.user, &alice.password, &project).await;
    assert_eq!(status, 401, "{message}");
    assert!(message.contains("locked"), "{message}");
    assert_eq!(login_status(&t, &bob.user, &bob.password, &project).await.0, 201);
    t.shutdown().await;
}

#[tokio::test]
async fn a_guessing_source_waits_longer_after_each_failure() {
    let t = TestCloud::start_with(quick_lockout(2)).await;
    let project = new_project(&t.admin, "flat").await;
    let bob = new_user_on(&t.admin, &project, "member").await;
    for n in 0..3 {
        assert_eq!(login_status(&t, &format!("guess-{n}"), "x", &project).await.0, 401);
    }
    // Three failures from this address, one beyond its free two: the next attempt, of any user, waits.
    let (status, message) = login_status(&t, &bob.user, &bob.password, &project).await;
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("from this address"), "{message}");
    let (status, message, waited) = patient_login(&t, &bob.user, &bob.password, &project).await;
    assert_eq!((status, waited), (201, 1), "after the wait bob logs in: {message}");
    t.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_logins_is_refused_before_it_is_hashed() {
    let t = TestCloud::start().await;
    let flood = (0..64).map(|n| {
        let url = t.url().to_string();
        tokio::spawn(async move {
            let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": format!("nobody-{n}"), "password": "x"}}}}});
            let response =
                reqwest::Client::new().post(format!("{url}/identity/v3/auth/tokens")).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.headers().contains_key("retry-after"))
        })
    });
    let mut answers = Vec::new();
    for answer in flood {
        answers.push(answer.await.unwrap());
    }
    for (status, retry_after) in &answers {
        assert!([401, 429, 503].contains(status), "{answers:?}");
        assert_eq!(*retry_after, *status != 401, "{answers:?}");
    }
    let refused = answers.iter().filter(|(s, _)| *s != 401).count();
    assert!(refused > 0, "64 logins at once cannot all be hashed: {answers:?}");
    let (status, _) = t.admin.raw(Method::GET, "/compute/v2.1/servers", None).await.unwrap();
    assert_eq!(status, 200, "an authenticated client is still served");
    t.shutdown().await;
}

async fn status_of(client: &Client, path: &str) -> u16 {
    client.raw(Method::GET, path, None).await.unwrap().0.as_u16()
}

#[tokio::test]
async fn access_taken_away_is_gone_at_the_next_request() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let servers = "/compute/v2.1/servers";
    let users = "/identity/v3/users";

    // A revoked token.
    let login = new_user_on(&t.admin, &project, "member").await;
    let (first, second) = (login.client(t.url()).await, login.client(t.url()).await);
    let revoke = reqwest::Client::new()
        .delete(format!("{}/identity/v3/auth/tokens", t.url()))
        .header("x-auth-token", first.token())
        .header("x-subject-token", first.token())
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    assert_eq!(status_of(&first, servers).await, 401);
    assert_eq!(status_of(&second, servers).await, 200, "only the revoked token is gone");

    // Validating a token: its own user may, an admin may, another user may not (Keystone's policy).
    let validate = |caller: &str, subject: &str| {
        let request = reqwest::Client::new()
            .get(format!("{}/identity/v3/auth/tokens", t.url()))
            .header("x-auth-token", caller)
            .header("x-subject-token", subject);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let other = new_user_on(&t.admin, &project, "member").await.client(t.url()).await;
    assert_eq!(validate(second.token(), second.token()).await, 200, "its own user");
    assert_eq!(validate(t.admin.token(), second.token()).await, 200, "an admin");
    assert_eq!(validate(other.token(), second.token()).await, 403, "another user");
    assert_eq!(validate(other.token(), first.token()).await, 404, "a revoked token is not found, for anyone");

    // A removed role.
    let user_id = user_id(&t.admin, &login.user).await;
    let grant = format!("/identity/v3/projects/{project}/users/{user_id}/roles/member");
    t.admin.send(Method::DELETE, &grant, None).await.unwrap();
    assert_eq!(status_of(&second, servers).await, 401, "no role left on the project");
    t.admin.send(Method::PUT, &grant, None).await.unwrap();
    assert_eq!(status_of(&second, servers).await, 200, "the role is back");
    let (status, _) = t.admin.raw(Method::DELETE, &grant.replace("/member", "/admin"), None).await.unwrap();
    assert_eq!(status, 404, "a role not held cannot be removed");

    // A disabled user, enabled again: the old tokens stay revoked, a new login works.
    let user_path = format!("{users}/{user_id}");
    let patch = |body: Value| {
        let (admin, path) = (t.admin.clone(), user_path.clone());
        async move { admin.send(Method::PATCH, &path, Some(&body)).await }
    };
    patch(json!({"user": {"enabled": false}})).await.unwrap();
    assert_eq!(status_of(&second, servers).await, 401);
    assert_eq!(login_status(&t, &login.user, &login.password, &project).await.0, 401);
    patch(json!({"user": {"enabled": true}})).await.unwrap();
    assert_eq!(status_of(&second, servers).await, 401, "a disable revoked the token for good");
    let third = login.client(t.url()).await;

    // A password set by the admin.
    patch(json!({"user": {"password": "new-pw"}})).await.unwrap();
    assert_eq!(status_of(&third, servers).await, 401);
    let fourth = Client::login(t.url(), &login.user, "new-pw", &project).await.unwrap();
    assert_eq!(status_of(&fourth, servers).await, 200);

    // A password the user changes: the old one must be proven.
    let change = |original: &str| json!({"user": {"original_password": original, "password": "newer-pw"}});
    let path = format!("{users}/{user_id}/password");
    let (status, _) = fourth.raw(Method::POST, &path, Some(&change("wrong"))).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = fourth.raw(Method::POST, &path, Some(&change("new-pw"))).await.unwrap();
    assert_eq!(status, 204);
    assert_eq!(status_of(&fourth, servers).await, 401);
    let fifth = Client::login(t.url(), &login.user, "newer-pw", &project).await.unwrap();

    // A deleted user.
    t.admin.delete(&format!("{users}/{user_id}")).await.unwrap();
    assert_eq!(status_of(&fifth, servers).await, 401);
    assert_eq!(status_of(&t.admin, &format!("{users}/{user_id}")).await, 404);
    t.shutdown().await;
}

async fn user_id(admin: &Client, name: &str) -> String {
    let users = admin.get("/identity/v3/users").await.unwrap();
    let user = users["users"].as_array().unwrap().iter().find(|u| u["name"] == name).unwrap();
    user["id"].as_str().unwrap().to_string()
}

/// What a project holds: its quota usage, and every allocated floating address of the cloud.
async fn holdings(t: &TestCloud, project: &str) -> (Value, Vec<Value>) {
    let usage = t.admin.get(&format!("/compute/v2.1/os-quota-sets/{project}/detail")).await.unwrap();
    let floating = t.admin.get("/compute/v2.1/os-floating-ips").await.unwrap();
    let mut addresses: Vec<Value> = floating["floating_ips"].as_array().cloned().unwrap_or_default();
    addresses.sort_by_key(|a| a["ip"].as_str().unwrap_or_default().to_string());
    (usage["quota_set"].clone(), addresses)
}

#[tokio::test]
async fn a_refused_create_allocates_and_charges_nothing() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let member = new_user_on(&t.admin, &project, "member").await.client(t.url()).await;
    let other = t.user_with_role("member").await;
    let theirs = create_server(&other, "theirs").await;
    wait_for_status(&other, &theirs, "ACTIVE").await;
    let public = t.admin.get("/network/v2.0/networks?router:external=true").await.unwrap();
    let public = public["networks"][0]["id"].as_str().unwrap().to_string();
    let image = nimbus_tests::default_image(&member).await;
    let before = holdings(&t, &project).await;
    let server = |fields: Value| {
        let mut body = json!({"name": "x", "imageRef": image, "flavorRef": "1"});
        body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        json!({"server": body})
    };
    let cases: Vec<(&str, Value, u16)> = vec![
        (
            "/network/v2.0/floatingips",
            json!({"floatingip": {"floating_network_id": public, "port_id": "no-such-port"}}),
            404,
        ),
        ("/network/v2.0/floatingips", json!({"floatingip": {"floating_network_id": public, "port_id": theirs}}), 404),
        ("/network/v2.0/floatingips", json!({"floatingip": {"floating_network_id": "no-such-network"}}), 404),
        ("/compute/v2.1/os-floating-ips", json!({"pool": "no-such-pool"}), 404),
        ("/compute/v2.1/servers", server(json!({"flavorRef": "no-such-flavor"})), 400),
        ("/compute/v2.1/servers", server(json!({"imageRef": "no-such-image"})), 400),
        ("/compute/v2.1/servers", server(json!({"networks": [{"uuid": "no-such-network"}]})), 400),
        ("/compute/v2.1/servers", server(json!({"min_count": 0})), 400),
    ];
    for (path, body, want) in &cases {
        let (status, answer) = member.raw(Method::POST, path, Some(body)).await.unwrap();
        assert_eq!(status.as_u16(), *want, "POST {path} {body}: {answer}");
        assert_eq!(holdings(&t, &project).await, before, "POST {path} {body} left something behind");
    }
    t.shutdown().await;
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private_also_for_an_existing_cloud() {
    let t = TestCloud::start().await;
    let dir = t.data_dir();
    let options = Options::default();
    let t = {
        // An older nimbus left everything open.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        t.restart(options).await
    };
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
    }
    assert!(files >= 2, "the store and clouds.yaml at least");
    t.shutdown().await;
}

fn tight_limits() -> Options {
    Options {
        server_limits: ServerLimits {
            max_connections: 20,
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
        },
        ..Options::default()
    }
}

/// A raw connection to the API, to misbehave with.
fn connect(t: &TestCloud) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(t.cloud.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Reads until the server closes; returns what it sent.
fn read_to_close(mut stream: std::net::TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_cannot_hold_the_api() {
    let t = TestCloud::start_with(tight_limits()).await;
    tokio::task::block_in_place(|| {
        // A request head that never ends is cut off.
        let mut slow = connect(&t);
        slow.write_all(b"GET /compute/v2.1/servers HTTP/1.1\r\nHost: x\r\n").unwrap();
        let started = std::time::Instant::now();
        let answer = read_to_close(slow);
        assert!(started.elapsed() < Duration::from_secs(5), "closed after the header timeout");
        assert!(!answer.contains("200 OK"), "{answer}");
        // A body that never comes is cut off.
        let mut slow = connect(&t);
        let head = "POST /compute/v2.1/servers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n";
        write!(slow, "{head}X-Auth-Token: {}\r\n\r\n{{\"server\"", t.admin.token()).unwrap();
        let answer = read_to_close(slow);
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        // A body that trickles in, a byte now and then, meets the same single deadline.
        let mut drip = connect(&t);
        let head = "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        drip.write_all(head.as_bytes()).unwrap();
        let started = std::time::Instant::now();
        drip.set_nonblocking(true).unwrap();
        let mut answer = Vec::new();
        while started.elapsed() < Duration::from_secs(8) {
            let _ = drip.write_all(b" ");
            let mut buf = [0u8; 512];
            match drip.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "cut off after the body deadline: {answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    });
    // A body over the limit.
    let big = json!({"server": {"name": "x".repeat(300 * 1024)}});
    let (status, _) = t.admin.raw(Method::POST, "/compute/v2.1/servers", Some(&big)).await.unwrap();
    assert_eq!(status, 413);
    let login = "x".repeat(20 * 1024);
    let response =
        reqwest::Client::new().post(format!("{}/identity/v3/auth/tokens", t.url())).body(login).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "the login route takes less");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_idlest_connections_make_room() {
    let limits = ServerLimits { header_timeout: Duration::from_secs(60), ..tight_limits().server_limits };
    let t = TestCloud::start_with(Options { server_limits: limits, ..Options::default() }).await;
    // Twice the cap in idle connections, opened one after the other.
    let mut idle = Vec::new();
    for _ in 0..40 {
        let stream = connect(&t);
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        idle.push(stream);
        // Give the server the time to accept it, so the order of idleness is the order of opening.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, _) = t.admin.raw(Method::GET, "/compute/v2.1/servers", None).await.unwrap();
    assert_eq!(status, 200, "another client is answered");
    // The oldest ones were closed to make room (long before their 60 s header timeout); the newest are open.
    let closed = tokio::task::block_in_place(|| {
        idle.drain(..10).map(|mut s| matches!(s.read(&mut [0u8; 1]), Ok(0))).filter(|closed| *closed).count()
    });
    assert_eq!(closed, 10, "the ten oldest idle connections were closed");
    let newest = idle.last_mut().unwrap();
    newest.set_nonblocking(true).unwrap();
    let still_open = matches!(newest.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(still_open, "the newest idle connection is kept");
    t.shutdown().await;
}

#[tokio::test]
async fn a_setting_that_conflicts_with_an_existing_cloud_is_refused_and_clouds_yaml_always_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = |password: Option<&str>| {
        let mut config = CloudConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.fake_hosts = 1;
        config.namespace = Namespace::new(&format!("conflict-{}", std::process::id()));
        config.admin_password = password.map(str::to_string);
        config
    };
    let clouds_yaml = dir.path().join("clouds.yaml");
    let cloud = Cloud::start(config(Some("first"))).await.unwrap();
    cloud.shutdown().await;
    assert!(std::fs::read_to_string(&clouds_yaml).unwrap().contains("password: \"first\""));

    for (change, refusal) in [
        (
            Box::new(|c: &mut CloudConfig| c.admin_password = Some("second".into())) as Box<dyn Fn(&mut CloudConfig)>,
            "is not the admin's password",
        ),
        (
            Box::new(|c: &mut CloudConfig| c.fixed_range = Some("10.9.0.0/24".parse().unwrap())),
            "its network private is 10.0.0.0/24",
        ),
        (
            Box::new(|c: &mut CloudConfig| c.floating_range = Some("198.51.100.0/24".parse().unwrap())),
            "its pool public is 203.0.113.0/24",
        ),
        (Box::new(|c: &mut CloudConfig| c.public_interface = Some("eth9".into())), "its pool public is on eth0"),
    ] {
        let mut refused = config(Some("first"));
        change(&mut refused);
        let error = Cloud::start(refused).await.err().expect("the start is refused");
        let message = nimbus_protocol::failure::chain(&error);
        assert!(message.contains(refusal) && message.contains("applies only when a cloud is created"), "{message}");
        assert!(std::fs::read_to_string(&clouds_yaml).unwrap().contains("password: \"first\""), "clouds.yaml is kept");
    }

    // The same settings again are fine; so is leaving them out.
    let mut same = config(Some("first"));
    same.fixed_range = Some("10.0.0.0/24".parse().unwrap());
    Cloud::start(same).await.unwrap().shutdown().await;

    // Without a password the one in clouds.yaml still works, so it is written again.
    let cloud = Cloud::start(config(None)).await.unwrap();
    assert!(std::fs::read_to_string(&clouds_yaml).unwrap().contains("password: \"first\""));
    // The admin changes their password through the API: a start without it cannot write a working
    // clouds.yaml, so there is none; a start with it writes one again.
    let admin = Client::login(&cloud.url, "admin", "first", "admin").await.unwrap();
    let me = admin.get("/identity/v3/users").await.unwrap()["users"][0]["id"].as_str().unwrap().to_string();
    admin
        .send(Method::PATCH, &format!("/identity/v3/users/{me}"), Some(&json!({"user": {"password": "changed"}})))
        .await
        .unwrap();
    cloud.shutdown().await;
    Cloud::start(config(None)).await.unwrap().shutdown().await;
    assert!(!clouds_yaml.exists(), "no clouds.yaml with a password that does not work");
    Cloud::start(config(Some("changed"))).await.unwrap().shutdown().await;
    assert!(std::fs::read_to_string(&clouds_yaml).unwrap().contains("password: \"changed\""));
}

#[tokio::test]
async fn a_refused_admin_create_leaves_nothing_behind() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let snapshot = || async {
        let users = t.admin.get("/identity/v3/users").await.unwrap()["users"].as_array().unwrap().len();
        let projects = t.admin.get("/identity/v3/projects").await.unwrap()["projects"].as_array().unwrap().len();
        let networks = t.admin.get("/compute/v2.1/os-networks").await.unwrap()["networks"].as_array().unwrap().len();
        let pools = t.admin.get("/compute/v2.1/os-floating-ip-pools").await.unwrap().to_string();
        (users, projects, networks, pools)
    };
    let before = snapshot().await;
    let cases = [
        (
            "/identity/v3/users",
            json!({"user": {"name": "x", "password": "pw", "default_project_id": "no-such-project"}}),
            400,
        ),
        ("/identity/v3/users", json!({"user": {"name": "x", "password": ""}}), 400),
        ("/identity/v3/projects", json!({"project": {"name": "x", "network_mode": "token-ring"}}), 400),
        (
            "/compute/v2.1/os-networks",
            json!({"network": {"label": "x", "cidr": "10.9.0.0/24", "project_id": "no-such-project"}}),
            400,
        ),
        ("/compute/v2.1/os-networks", json!({"network": {"label": "x", "cidr": "127.0.0.0/24"}}), 400),
        (
            "/compute/v2.1/os-floating-ips-bulk",
            json!({"floating_ips_bulk_create": {"ip_range": "224.0.0.0/28", "pool": "x"}}),
            400,
        ),
    ];
    for (path, body, want) in &cases {
        let (status, answer) = t.admin.raw(Method::POST, path, Some(body)).await.unwrap();
        assert_eq!(status.as_u16(), *want, "POST {path} {body}: {answer}");
        assert_eq!(snapshot().await, before, "POST {path} {body} left something behind");
    }
    let user = new_user_on(&t.admin, &project, "member").await;
    let users = t.admin.get("/identity/v3/users").await.unwrap();
    let id = users["users"].as_array().unwrap().iter().find(|u| u["name"] == user.user.as_str()).unwrap()["id"].clone();
    let (status, _) = t
        .admin
        .raw(
            Method::PUT,
            &format!("/identity/v3/projects/{project}/users/{}/roles/no-such-role", id.as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    t.shutdown().await;
}

#[tokio::test]
async fn what_is_not_yours_answers_as_what_does_not_exist() {
    let t = TestCloud::start().await;
    let (mine, theirs) = (t.user_with_role("member").await, t.user_with_role("member").await);
    let server = create_server(&theirs, "theirs").await;
    wait_for_status(&theirs, &server, "ACTIVE").await;
    let floating = theirs.post("/compute/v2.1/os-floating-ips", &json!({"pool": "public"})).await.unwrap();
    let floating = floating["floating_ip"]["id"].as_str().unwrap().to_string();
    let their_project =
        nimbus_tests::server(&theirs, &server).await.unwrap()["tenant_id"].as_str().unwrap().to_string();
    let missing = "00000000-0000-4000-8000-000000000000";
    let users = t.admin.get("/identity/v3/users").await.unwrap();
    let admin = users["users"].as_array().unwrap().iter().find(|u| u["name"] == "admin").unwrap()["id"].clone();
    let admin = admin.as_str().unwrap().to_string();
    let change = json!({"user": {"original_password": "x", "password": "y"}});
    for user in [&admin, missing] {
        let path = format!("/identity/v3/users/{user}/password");
        let (status, body) = mine.raw(Method::POST, &path, Some(&change)).await.unwrap();
        assert_eq!(status, 404, "another's password change is not found: {body}");
    }
    for (theirs, nobodys) in [
        (format!("/identity/v3/users/{admin}"), format!("/identity/v3/users/{missing}")),
        (format!("/compute/v2.1/servers/{server}"), format!("/compute/v2.1/servers/{missing}")),
        (format!("/compute/v2.1/os-floating-ips/{floating}"), format!("/compute/v2.1/os-floating-ips/{missing}")),
        (format!("/network/v2.0/floatingips/{floating}"), format!("/network/v2.0/floatingips/{missing}")),
        (format!("/network/v2.0/ports/{server}"), format!("/network/v2.0/ports/{missing}")),
        (format!("/compute/v2.1/os-quota-sets/{their_project}"), format!("/compute/v2.1/os-quota-sets/{missing}")),
        (
            format!("/compute/v2.1/os-quota-sets/{their_project}/detail"),
            format!("/compute/v2.1/os-quota-sets/{missing}/detail"),
        ),
    ] {
        let (a, body_a) = mine.raw(Method::GET, &theirs, None).await.unwrap();
        let (b, body_b) = mine.raw(Method::GET, &nobodys, None).await.unwrap();
        assert_eq!(a, b, "{theirs} answers {a} {body_a}, {nobodys} answers {b} {body_b}");
        assert!(a.is_client_error(), "{theirs}: {a}");
    }
    t.shutdown().await;
}
