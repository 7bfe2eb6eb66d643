//! Bad input gets a 4xx with an OpenStack error body (never a 500, a panic or a hang), and every response
//! carries a request id.

use std::time::Duration;

use nimbus::client::Client;
use nimbus_tests::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Sends a raw body (possibly not JSON) with the admin token.
async fn post_raw(t: &TestCloud, path: &str, body: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", t.url()))
        .header("x-auth-token", t.admin.token())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn check_compute_error(status: StatusCode, body: &Value, code: u16, fault: &str, message_part: &str) {
    assert_eq!(status.as_u16(), code, "{body}");
    assert_eq!(body[fault]["code"], code, "{body}");
    let message = body[fault]["message"].as_str().unwrap_or_default();
    assert!(message.contains(message_part), "message {message:?} should mention {message_part:?}");
}

#[tokio::test]
async fn malformed_or_incomplete_server_requests_are_400() {
    let t = TestCloud::start().await;
    let image = default_image(&t.admin).await;
    let cases = [
        ("{not json", "Malformed request body"),
        ("", "empty"),
        ("[]", "Invalid input"),
        (r#"{"server": {"imageRef": "x", "flavorRef": "1"}}"#, "missing field `name`"),
        (r#"{"server": {"name": "a", "flavorRef": "1"}}"#, "missing field `imageRef`"),
        (r#"{"server": {"name": 7, "imageRef": "x", "flavorRef": "1"}}"#, "invalid type"),
    ];
    for (body, message) in cases {
        let (status, reply) = post_raw(&t, "/compute/v2.1/servers", body).await;
        check_compute_error(status, &reply, 400, "badRequest", message);
    }
    let semantic = [
        (json!({"server": {"name": "a", "imageRef": image, "flavorRef": "99"}}), "Flavor 99 could not be found."),
        (
            json!({"server": {"name": "a", "imageRef": "no-such-image", "flavorRef": "1"}}),
            "Image no-such-image could not be found.",
        ),
        (json!({"server": {"name": "a", "imageRef": uuid_like(), "flavorRef": "1"}}), "could not be found"),
        (json!({"server": {"name": "", "imageRef": image, "flavorRef": "1"}}), "server name"),
        (json!({"server": {"name": "a", "imageRef": image, "flavorRef": "1", "max_count": 0}}), "max_count"),
        (
            json!({"server": {"name": "a", "imageRef": image, "flavorRef": "1", "networks": [{"uuid": uuid_like()}]}}),
            "Network",
        ),
    ];
    for (body, message) in semantic {
        let (status, reply) = t.admin.raw(Method::POST, "/compute/v2.1/servers", Some(&body)).await.unwrap();
        check_compute_error(status, &reply, 400, "badRequest", message);
    }
    let listed = t.admin.get("/compute/v2.1/servers").await.unwrap();
    assert!(listed["servers"].as_array().unwrap().is_empty(), "nothing was created by bad requests");
    t.shutdown().await;
}

fn uuid_like() -> String {
    "3f1d1c1e-0000-4000-8000-000000000000".to_string()
}

#[tokio::test]
async fn missing_wrong_and_expired_tokens_are_401() {
    let mut options = Options::default();
    options.timing.token_ttl = Duration::from_secs(1);
    let t = TestCloud::start_with(options).await;
    let http = reqwest::Client::new();
    let no_token = http.get(format!("{}/compute/v2.1/servers", t.url())).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert!(no_token.headers().contains_key("x-openstack-request-id"));
    let body: Value = no_token.json().await.unwrap();
    assert_eq!(body["unauthorized"]["code"], 401);

    let wrong =
        http.get(format!("{}/compute/v2.1/servers", t.url())).header("x-auth-token", "bogus").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let wrong = http.get(format!("{}/image/v2/images", t.url())).header("x-auth-token", "bogus").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    // The admin client's token was issued with a 1 s lifetime: it works until it expires, then says so.
    wait_until("the token to expire", Duration::from_secs(10), || async {
        let (status, body) = t.admin.raw(Method::GET, "/compute/v2.1/servers", None).await.unwrap();
        assert!(status == 200 || status == 401, "{status}: {body}");
        status == 401
    })
    .await;
    let (_, body) = t.admin.raw(Method::GET, "/compute/v2.1/servers", None).await.unwrap();
    assert!(body["unauthorized"]["message"].as_str().unwrap().contains("expired"), "{body}");
    t.shutdown().await;
}

#[tokio::test]
async fn bad_passwords_and_bad_token_requests_get_identity_errors() {
    let t = TestCloud::start().await;
    let denied = Client::login(t.url(), "admin", "wrong", "admin").await.unwrap_err().to_string();
    assert!(denied.contains("401"), "{denied}");
    let unknown = Client::login(t.url(), "nobody", "x", "admin").await.unwrap_err().to_string();
    assert!(unknown.contains("401"), "{unknown}");
    let http = reqwest::Client::new();
    let response = http.post(format!("{}/identity/v3/auth/tokens", t.url())).body("{").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 400, "{body}");
    assert_eq!(body["error"]["title"], "Bad Request");
    t.shutdown().await;
}

#[tokio::test]
async fn unknown_things_are_404_and_every_answer_has_a_request_id() {
    let t = TestCloud::start().await;
    for path in [
        "/compute/v2.1/servers/no-such-server",
        "/compute/v2.1/servers/3f1d1c1e-0000-4000-8000-000000000000",
        "/compute/v2.1/flavors/m1.tiny",
        "/image/v2/images/cirros",
        "/compute/v2.1/nonsense",
    ] {
        let (status, body) = t.admin.raw(Method::GET, path, None).await.unwrap();
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body.as_object().is_some_and(|o| o.values().next().is_some_and(|v| v["code"] == 404)),
            "{path}: {body}"
        );
    }
    let response = reqwest::Client::new()
        .get(format!("{}/compute/v2.1/flavors", t.url()))
        .header("x-auth-token", t.admin.token())
        .header("OpenStack-API-Version", "compute 2.1")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-openstack-request-id"].to_str().unwrap();
    assert!(id.starts_with("req-"), "{id}");
    assert_eq!(response.headers()["x-compute-request-id"].to_str().unwrap(), id);
    assert_eq!(response.headers()["openstack-api-version"], "compute 2.1");
    t.shutdown().await;
}

#[tokio::test]
async fn unsupported_microversions_are_refused_clearly() {
    let t = TestCloud::start().await;
    let response = reqwest::Client::new()
        .get(format!("{}/compute/v2.1/servers", t.url()))
        .header("x-auth-token", t.admin.token())
        .header("OpenStack-API-Version", "compute 2.90")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    let body: Value = response.json().await.unwrap();
    assert!(body["notAcceptable"]["message"].as_str().unwrap().contains("2.90"), "{body}");
    t.shutdown().await;
}

#[tokio::test]
async fn creating_duplicate_users_or_projects_is_a_conflict() {
    let t = TestCloud::start().await;
    let (status, body) =
        t.admin.raw(Method::POST, "/identity/v3/projects", Some(&json!({"project": {"name": "admin"}}))).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], 409);
    let (status, _) = t
        .admin
        .raw(Method::POST, "/identity/v3/users", Some(&json!({"user": {"name": "admin", "password": "x"}})))
        .await
        .unwrap();
    assert_eq!(status, 409);
    let member = t.user_with_role("member").await;
    let (status, body) =
        member.raw(Method::POST, "/identity/v3/projects", Some(&json!({"project": {"name": "mine"}}))).await.unwrap();
    assert_eq!(status, 403, "{body}");
    t.shutdown().await;
}
