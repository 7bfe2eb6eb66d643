//! Images as Glance's clients drive them: members create them in their project, upload their data once
//! (size and checksums recorded, the bytes kept under the data directory) and download it; only admins make
//! one public; a server boots only from an active image.

use std::os::unix::fs::PermissionsExt;

use md5::Digest;
use nimbus::client::Client;
use nimbus_tests::*;
use reqwest::Method;
use serde_json::json;

const IMAGES: &str = "/image/v2/images";

/// A `PUT` of raw `data` to the image's file, with `content_type`; the answer's status.
async fn put_data(client: &Client, id: &str, content_type: &str, data: Vec<u8>) -> u16 {
    let url = format!("{}{IMAGES}/{id}/file", client.base());
    let answer = reqwest::Client::new()
        .put(url)
        .header("X-Auth-Token", client.token())
        .header("Content-Type", content_type)
        .body(data)
        .send()
        .await
        .unwrap();
    answer.status().as_u16()
}

async fn get_data(client: &Client, id: &str) -> (u16, Vec<u8>) {
    let url = format!("{}{IMAGES}/{id}/file", client.base());
    let answer = reqwest::Client::new().get(url).header("X-Auth-Token", client.token()).send().await.unwrap();
    (answer.status().as_u16(), answer.bytes().await.unwrap().to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn members_create_upload_download_boot_and_delete_their_images() {
    let t = TestCloud::start().await;
    let alice = t.user_with_role("member").await;
    let eve = t.user_with_role("member").await;
    let made = alice.post(IMAGES, &json!({"name": "mine", "disk_format": "raw", "container_format": "bare"})).await;
    let made = made.unwrap();
    let id = made["id"].as_str().unwrap().to_string();
    assert_eq!((made["status"].as_str(), made["visibility"].as_str()), (Some("queued"), Some("private")), "{made}");
    assert_eq!(status(&eve, Method::GET, &format!("{IMAGES}/{id}"), None).await.0, 404, "another project's");
    let queued = alice.get(&format!("{IMAGES}?status=queued")).await.unwrap();
    assert_eq!(queued["images"].as_array().unwrap().len(), 1, "{queued}");
    assert_eq!(status(&alice, Method::GET, &format!("{IMAGES}?status=killed"), None).await.0, 400);

    // No server from an image without data.
    let boot = |image: &str| json!({"server": {"name": "from-mine", "imageRef": image, "flavorRef": "1"}});
    let (got, answer) = status(&alice, Method::POST, "/compute/v2.1/servers", Some(boot(&id))).await;
    assert_eq!(got, 400, "{answer}");
    assert!(answer.to_string().contains("not active"), "{answer}");

    // Upload: the media type is checked, the data taken once, its size and checksums recorded.
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|n: u32| (n % 251) as u8).collect();
    assert_eq!(put_data(&alice, &id, "application/json", data.clone()).await, 415);
    let oversized = reqwest::Client::new()
        .put(format!("{}{IMAGES}/{id}/file", alice.base()))
        .header("X-Auth-Token", alice.token())
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", (65u64 << 30).to_string())
        .body(Vec::new())
        .send()
        .await;
    assert_eq!(oversized.unwrap().status().as_u16(), 413, "an announced 65 GiB is refused before its body");
    assert_eq!(put_data(&eve, &id, "application/octet-stream", data.clone()).await, 404);
    assert_eq!(put_data(&alice, &id, "application/octet-stream", data.clone()).await, 204);
    assert_eq!(put_data(&alice, &id, "application/octet-stream", data.clone()).await, 409, "data is uploaded once");
    let shown = alice.get(&format!("{IMAGES}/{id}")).await.unwrap();
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["size"], data.len());
    assert_eq!(shown["checksum"], hex(&md5::Md5::digest(&data)));
    assert_eq!(shown["os_hash_algo"], "sha512");
    assert_eq!(shown["os_hash_value"], hex(&sha2::Sha512::digest(&data)));
    let files: Vec<_> = std::fs::read_dir(t.data_dir().join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(get_data(&alice, &id).await, (200, data.clone()));
    let listed = alice.get(&format!("{IMAGES}?name=cirros-0.6.2-x86_64-disk")).await.unwrap();
    let catalog = listed["images"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(get_data(&alice, &catalog).await.0, 204, "the catalog's image is a record without data");

    // Active, a server boots from it; the data outlives a restart.
    let server = alice.post("/compute/v2.1/servers", &boot(&id)).await.unwrap();
    wait_for_status(&alice, server["server"]["id"].as_str().unwrap(), "ACTIVE").await;
    let t = t.restart(Options::default()).await;
    let alice = t.user_on(&image_project(&t, &id), "member").await;
    assert_eq!(get_data(&alice, &id).await, (200, data));

    // Public is an admin's call; someone else's image is not a member's to change.
    let (got, _) = status(&alice, Method::POST, IMAGES, Some(json!({"name": "pub", "visibility": "public"}))).await;
    assert_eq!(got, 403);
    let (got, _) = status(&alice, Method::POST, IMAGES, Some(json!({"name": "x", "visibility": "community"}))).await;
    assert_eq!(got, 400);
    assert_eq!(status(&alice, Method::DELETE, &format!("{IMAGES}/{catalog}"), None).await.0, 403);
    let public = t.admin.post(IMAGES, &json!({"name": "pub", "visibility": "public"})).await.unwrap();
    assert_eq!(public["visibility"], "public");
    let import = alice.get("/image/v2/info/import").await.unwrap();
    assert_eq!(import["import-methods"]["value"], json!([]), "data comes by upload only");

    // Deleted with its data.
    assert_eq!(status(&alice, Method::DELETE, &format!("{IMAGES}/{id}"), None).await.0, 204);
    assert_eq!(status(&alice, Method::GET, &format!("{IMAGES}/{id}"), None).await.0, 404);
    assert_eq!(std::fs::read_dir(t.data_dir().join("images")).unwrap().count(), 0, "the data is gone");
    t.shutdown().await;
}

/// The project owning image `id`, read by the admin.
fn image_project(t: &TestCloud, id: &str) -> String {
    let image: nimbus_protocol::ids::ImageId = id.parse().unwrap();
    let record =
        t.cloud.store.read(|r| nimbus_storage::Reads::get(r, &nimbus_storage::schema::IMAGES, &image)).unwrap();
    record.unwrap().owner.unwrap().to_string()
}
