//! Key pairs through `os-keypairs`: generated or imported, per user, counted by quota, kept by the servers
//! created with them, gone with their user, kept across a restart.

use nimbus_storage::Reads;
use nimbus_storage::schema::KEY_PAIRS;
use nimbus_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const KEYPAIRS: &str = "/compute/v2.1/os-keypairs";
/// Made by `ssh-keygen -t rsa -b 2048`; the fingerprint is `ssh-keygen -l -E md5`'s.
const RSA_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCxfVUxZFZePpon7rnnRkWIjF0QvCxrKzcMB/wngnEzI9fHtCoCQTj+F4xTqokHczm2G/b+Q4Y9oYgJ/waHkrGOHFytAvgNcoP59mTuVJOPGnrsVIh40iAlyv1OGc9eVX1DjkKYiv4wJ5BMVMDMuzbHOhIJHfPcwzgBG5DUeSShfgt/GgZpxkXOxfJnV4UGLX5EqrfxinAZxezY0jVZS6x+OAxpTHtUQsEXbmKAkKJr2sL2gr6mMrqWgIRbc9cHdp6HoYrlV3+KqcYOGvWeh6BHc8pNAKEvUqry+VzNU8VsDSyd7I7SLSakYvZF1nFzoT6UHTS0n/Xg00z3uz9g17v1 bob@host";
const RSA_FINGERPRINT: &str = "7c:ff:69:e4:de:88:d1:2c:4d:b1:34:9b:65:d6:80:f1";

/// The id of the user named `name`, as the identity API shows it.
async fn user_id(admin: &nimbus::client::Client, name: &str) -> String {
    let users = admin.get("/identity/v3/users").await.unwrap();
    let user = users["users"].as_array().unwrap().iter().find(|u| u["name"] == name).unwrap();
    user["id"].as_str().unwrap().to_string()
}

fn names(listed: &Value) -> Vec<String> {
    listed["keypairs"].as_array().unwrap().iter().map(|k| k["keypair"]["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn key_pairs_are_generated_or_imported_per_user_and_refused_when_bad() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let alice = new_user_on(&t.admin, &project, "member").await;
    let alice_id = user_id(&t.admin, &alice.user).await;
    let alice = alice.client(t.url()).await;
    let bob = t.user_on(&project, "member").await;

    let generated = alice.post(KEYPAIRS, &json!({"keypair": {"name": "gen"}})).await.unwrap();
    let generated = &generated["keypair"];
    let private_key = generated["private_key"].as_str().unwrap();
    assert!(private_key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{generated}");
    let public_key = generated["public_key"].as_str().unwrap();
    assert!(public_key.starts_with("ssh-ed25519 AAAA"), "{generated}");
    assert_eq!(generated["user_id"], alice_id.as_str());
    let private = ssh_key::PrivateKey::from_openssh(private_key).unwrap();
    assert_eq!(private.public_key().to_openssh().unwrap(), public_key, "the halves belong together");

    let imported = alice.post(KEYPAIRS, &json!({"keypair": {"name": "my key", "public_key": RSA_KEY}})).await.unwrap();
    assert_eq!(imported["keypair"]["fingerprint"], RSA_FINGERPRINT);
    assert!(imported["keypair"].get("private_key").is_none(), "an imported key has no private half here");

    for (body, expected, why) in [
        (json!({"keypair": {"name": "gen"}}), 409, "a name the user has"),
        (json!({"keypair": {"name": "bad", "public_key": "ssh-rsa AAAAnotakey"}}), 400, "a malformed key"),
        (json!({"keypair": {"name": "bad", "public_key": ""}}), 400, "an empty key"),
        (json!({"keypair": {"name": "semi;colon"}}), 400, "an unsafe name"),
        (json!({"keypair": {"name": ""}}), 400, "an empty name"),
        (json!({"keypair": {"name": "typed", "type": "ssh"}}), 400, "a field of a later microversion"),
        (json!({"keypair": {}}), 400, "no name"),
    ] {
        let (got, answer) = status(&alice, Method::POST, KEYPAIRS, Some(body)).await;
        assert_eq!(got, expected, "{why}: {answer}");
        assert!(answer.to_string().len() > 40, "{why}: the answer says why: {answer}");
    }

    assert_eq!(names(&alice.get(KEYPAIRS).await.unwrap()), vec!["gen", "my key"]);
    let shown = alice.get(&format!("{KEYPAIRS}/my%20key")).await.unwrap();
    assert_eq!(shown["keypair"]["public_key"], RSA_KEY);
    assert_eq!(shown["keypair"]["deleted"], false);
    assert!(shown["keypair"]["id"].as_u64().is_some_and(|id| id > 0), "{shown}");

    // Another user of the same project sees none of them.
    assert_eq!(names(&bob.get(KEYPAIRS).await.unwrap()), Vec::<String>::new());
    assert_eq!(status(&bob, Method::GET, &format!("{KEYPAIRS}/gen"), None).await.0, 404);
    assert_eq!(status(&bob, Method::DELETE, &format!("{KEYPAIRS}/gen"), None).await.0, 404);
    bob.post(KEYPAIRS, &json!({"keypair": {"name": "gen"}})).await.expect("names are per user");

    assert_eq!(status(&alice, Method::DELETE, &format!("{KEYPAIRS}/gen"), None).await.0, 202);
    assert_eq!(status(&alice, Method::DELETE, &format!("{KEYPAIRS}/gen"), None).await.0, 404);
    assert_eq!(names(&alice.get(KEYPAIRS).await.unwrap()), vec!["my key"]);
    t.shutdown().await;
}

#[tokio::test]
async fn key_pairs_are_counted_kept_by_servers_gone_with_their_user_and_durable() {
    let t = TestCloud::start().await;
    let project = new_project(&t.admin, "flat").await;
    let carol = new_user_on(&t.admin, &project, "member").await;
    let carol_id: nimbus_protocol::ids::UserId = user_id(&t.admin, &carol.user).await.parse().unwrap();
    let carol = carol.client(t.url()).await;

    let quota = format!("/compute/v2.1/os-quota-sets/{project}");
    let (got, _) = status(&t.admin, Method::PUT, &quota, Some(json!({"quota_set": {"key_pairs": 2}}))).await;
    assert_eq!(got, 200);
    assert_eq!(t.admin.get(&quota).await.unwrap()["quota_set"]["key_pairs"], 2);
    carol.post(KEYPAIRS, &json!({"keypair": {"name": "one"}})).await.unwrap();
    carol.post(KEYPAIRS, &json!({"keypair": {"name": "two", "public_key": RSA_KEY}})).await.unwrap();
    let (got, answer) = status(&carol, Method::POST, KEYPAIRS, Some(json!({"keypair": {"name": "three"}}))).await;
    assert_eq!(got, 403, "over the key-pair quota: {answer}");

    // A server keeps the key it was created with, even once the key pair is deleted.
    let image = default_image(&carol).await;
    let server = |key: &str| json!({"server": {"name": "vm", "imageRef": image, "flavorRef": "1", "key_name": key}});
    let (got, answer) = status(&carol, Method::POST, "/compute/v2.1/servers", Some(server("missing"))).await;
    assert_eq!(got, 400, "an unknown key_name: {answer}");
    let created = carol.post("/compute/v2.1/servers", &server("two")).await.unwrap();
    let id = created["server"]["id"].as_str().unwrap().to_string();
    assert_eq!(wait_for_status(&carol, &id, "ACTIVE").await["key_name"], "two");
    carol.delete(&format!("{KEYPAIRS}/two")).await.unwrap();
    assert_eq!(server_of(&carol, &id).await["key_name"], "two");
    let stored = t.cloud.store.read(|r| r.get(&nimbus_storage::schema::INSTANCES, &id.parse().unwrap()));
    assert_eq!(stored.unwrap().unwrap().key.unwrap().public_key, RSA_KEY);

    // Another user's key name is not this user's.
    let dave = t.user_on(&project, "member").await;
    dave.post(KEYPAIRS, &json!({"keypair": {"name": "daves"}})).await.unwrap();
    let (got, _) = status(&carol, Method::POST, "/compute/v2.1/servers", Some(server("daves"))).await;
    assert_eq!(got, 400);

    let t = t.restart(Options::default()).await;
    let pairs = t.cloud.store.read(|r| r.scan(&KEY_PAIRS)).unwrap();
    let mut kept: Vec<_> = pairs.iter().map(|(_, p)| (p.user == carol_id, p.name.as_str())).collect();
    kept.sort();
    assert_eq!(kept, vec![(false, "daves"), (true, "one")], "the key pairs are kept across a restart");

    t.admin.delete(&format!("/identity/v3/users/{carol_id}")).await.unwrap();
    let pairs = t.cloud.store.read(|r| r.scan(&KEY_PAIRS)).unwrap();
    assert!(pairs.iter().all(|(_, p)| p.user != carol_id), "a deleted user's key pairs are gone");
    assert_eq!(pairs.len(), 1);
    t.shutdown().await;
}

async fn server_of(client: &nimbus::client::Client, id: &str) -> Value {
    server(client, id).await.unwrap_or_else(|| panic!("server {id} exists"))
}

#[tokio::test]
async fn an_unknown_key_pair_route_answers_json_errors() {
    let t = TestCloud::start().await;
    let (got, answer) = status(&t.admin, Method::GET, &format!("{KEYPAIRS}/nothing-here"), None).await;
    assert_eq!(got, StatusCode::NOT_FOUND.as_u16());
    assert!(answer["itemNotFound"]["message"].as_str().is_some_and(|m| m.contains("nothing-here")), "{answer}");
    t.shutdown().await;
}
