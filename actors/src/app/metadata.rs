//! The metadata service's documents: what an instance learns about itself at 169.254.169.254, in the
//! OpenStack format (`/openstack/latest/meta_data.json`, `network_data.json`, `user_data`) and the EC2 one
//! (`/latest/meta-data/…`, `/latest/user-data`). The instance is the one holding the request's source
//! address on the network it came from (the network whose gateway the request was redirected to): the
//! anti-spoofing rules keep an instance to its own address, so it can read only its own metadata.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use nimbus_protocol::ids::NetworkId;
use nimbus_storage::records::{Instance, Network};
use nimbus_storage::schema::{FIXED_IPS, INSTANCES, NETWORKS, SECURITY_GROUPS, USER_DATA};
use nimbus_storage::{Pair, Reads, StoreError};
use serde_json::json;

use crate::app::App;
use crate::app::error::CloudError;
use crate::names::dhcp_hostname;

/// One answer of the service.
#[derive(Debug, PartialEq, Eq)]
pub struct Document {
    pub body: Vec<u8>,
    /// JSON (`application/json`) or text (`text/plain`).
    pub json: bool,
}

impl Document {
    fn text(text: impl Into<String>) -> Document {
        Document { body: text.into().into_bytes(), json: false }
    }

    fn json(value: serde_json::Value) -> Document {
        Document { body: value.to_string().into_bytes(), json: true }
    }
}

/// What the service knows of the instance a request came from.
struct Requester {
    instance: Instance,
    /// The networks of all its interfaces.
    networks: BTreeMap<NetworkId, Network>,
    address: Ipv4Addr,
    /// The name its DHCP server knows it by, given with its first address (a rename keeps it, as in nova),
    /// under the DHCP domain.
    hostname: String,
    user_data: Option<Vec<u8>>,
    groups: Vec<String>,
}

fn requester_in(r: &impl Reads, gateway: Ipv4Addr, source: Ipv4Addr) -> Result<Option<Requester>, StoreError> {
    let Some(network) = r.scan(&NETWORKS)?.into_iter().map(|(_, n)| n).find(|n| n.gateway == gateway) else {
        return Ok(None);
    };
    let Some(row) = r.get(&FIXED_IPS, &Pair(network.id, u32::from(source)))?.filter(|row| row.allocated) else {
        return Ok(None);
    };
    let Some(instance) = row.instance.map(|id| r.get(&INSTANCES, &id)).transpose()?.flatten() else {
        return Ok(None);
    };
    if !instance.interfaces.iter().any(|i| i.network == network.id && i.address == source) {
        return Ok(None);
    }
    let user_data = r.get(&USER_DATA, &instance.id)?.map(|d| d.bytes);
    let mut groups = Vec::with_capacity(instance.security_groups.len());
    for id in &instance.security_groups {
        groups.extend(r.get(&SECURITY_GROUPS, id)?.map(|g| g.name));
    }
    let hostname = row.hostname.unwrap_or_else(|| dhcp_hostname(&instance.name, instance.id));
    let mut networks = BTreeMap::new();
    for interface in &instance.interfaces {
        if let Some(n) = r.get(&NETWORKS, &interface.network)? {
            networks.insert(n.id, n);
        }
    }
    Ok(Some(Requester { instance, networks, address: source, hostname, user_data, groups }))
}

/// The document at `path` for the instance holding `source` on the network whose gateway is `gateway` (where
/// the request was sent); a 404 for anything else (no such network or instance, no such document, no user
/// data).
pub fn answer(app: &App, gateway: Ipv4Addr, source: Ipv4Addr, path: &str) -> Result<Document, CloudError> {
    let not_found = || CloudError::NotFound(format!("No metadata at {path} for {source}."));
    let mut requester = app.store.read(|r| requester_in(r, gateway, source))?.ok_or_else(not_found)?;
    // Nova names the instance under its DHCP domain here: `vm1.novalocal`.
    requester.hostname = format!("{}.{}", requester.hostname, app.dhcp_domain());
    document(&requester, path).ok_or_else(not_found)
}

/// A version segment: `latest`, or a dated version (`2012-08-10`, `2009-04-04`), all served alike.
fn is_version(segment: &str) -> bool {
    segment == "latest"
        || (segment.len() == 10
            && segment.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() }))
}

fn document(q: &Requester, path: &str) -> Option<Document> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Some(Document::text("latest\n")),
        ["openstack"] => Some(Document::text("latest\n")),
        ["openstack", v] if is_version(v) => {
            let mut list = String::from("meta_data.json\nnetwork_data.json\n");
            if q.user_data.is_some() {
                list.push_str("user_data\n");
            }
            Some(Document::text(list))
        }
        ["openstack", v, "meta_data.json"] if is_version(v) => Some(Document::json(meta_data(q))),
        ["openstack", v, "network_data.json"] if is_version(v) => Some(Document::json(network_data(q))),
        ["openstack", v, "user_data"] if is_version(v) => user_data(q),
        [v, "user-data"] if is_version(v) => user_data(q),
        [v] if is_version(v) => Some(Document::text("meta-data/\nuser-data\n")),
        [v, "meta-data", rest @ ..] if is_version(v) => ec2(q, rest),
        _ => None,
    }
}

fn meta_data(q: &Requester) -> serde_json::Value {
    let i = &q.instance;
    let (public_keys, keys): (BTreeMap<_, _>, Vec<_>) = i
        .key
        .iter()
        .map(|k| ((k.name.clone(), k.public_key.clone()), json!({"name": k.name, "type": "ssh", "data": k.public_key})))
        .unzip();
    json!({
        "uuid": i.id.to_string(),
        "name": i.name,
        "hostname": q.hostname,
        "project_id": i.project.to_string(),
        "availability_zone": "nova",
        "public_keys": public_keys,
        "keys": keys,
        "meta": i.metadata,
        "devices": devices(i),
    })
}

/// The tagged devices (2.32's device tags): the guest finds each NIC by its MAC. nimbus's NICs are veths with
/// no bus address, so none is given.
fn devices(i: &Instance) -> Vec<serde_json::Value> {
    i.interfaces
        .iter()
        .filter_map(|f| i.nic_tags.get(&f.id).map(|tag| json!({"type": "nic", "mac": f.mac, "tags": [tag]})))
        .collect()
}

fn network_data(q: &Requester) -> serde_json::Value {
    let (mut links, mut networks) = (Vec::new(), Vec::new());
    for (n, interface) in q.instance.interfaces.iter().enumerate() {
        let link = format!("tap{}", &interface.id.0.simple().to_string()[..11]);
        links.push(json!({
            "id": link,
            "vif_id": interface.id.to_string(),
            "type": "bridge",
            "ethernet_mac_address": interface.mac,
            "mtu": q.networks.get(&interface.network).and_then(|n| n.mtu),
        }));
        let mut network = json!({
            "id": format!("network{n}"),
            "type": "ipv4",
            "link": link,
            "ip_address": interface.address.to_string(),
            "network_id": interface.network.to_string(),
            "services": [],
        });
        if let Some(on) = q.networks.get(&interface.network) {
            network["netmask"] = json!(on.cidr.mask().to_string());
            // The first interface has the default route, as the guest's DHCP client sets it.
            let routes = if n == 0 {
                json!([{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": on.gateway.to_string()}])
            } else {
                json!([])
            };
            network["routes"] = routes;
        }
        networks.push(network);
    }
    json!({"links": links, "networks": networks, "services": []})
}

fn user_data(q: &Requester) -> Option<Document> {
    q.user_data.clone().map(|body| Document { body, json: false })
}

/// EC2's `instance-id`: `i-` and 17 hex digits, from the random end of the instance's id.
fn ec2_id(q: &Requester) -> String {
    let hex = q.instance.id.0.simple().to_string();
    format!("i-{}", &hex[hex.len() - 17..])
}

fn ec2(q: &Requester, rest: &[&str]) -> Option<Document> {
    let floating = q.instance.interfaces.iter().flat_map(|i| i.floating.iter()).next();
    let key = q.instance.key.as_ref();
    let text = match rest {
        [] => {
            let mut list = vec!["hostname", "instance-id", "local-hostname", "local-ipv4"];
            if floating.is_some() {
                list.push("public-ipv4");
            }
            if key.is_some() {
                list.push("public-keys/");
            }
            list.push("security-groups");
            list.join("\n") + "\n"
        }
        ["instance-id"] => ec2_id(q),
        ["hostname" | "local-hostname"] => q.hostname.clone(),
        ["local-ipv4"] => q.address.to_string(),
        ["public-ipv4"] => floating?.to_string(),
        ["security-groups"] => q.groups.join("\n"),
        ["public-keys"] => format!("0={}", key?.name),
        ["public-keys", "0"] => key.map(|_| "openssh-key".to_string())?,
        ["public-keys", "0", "openssh-key"] => key?.public_key.clone(),
        _ => return None,
    };
    Some(Document::text(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_latest_or_dated() {
        for (segment, version) in [
            ("latest", true),
            ("2012-08-10", true),
            ("2009-04-04", true),
            ("2012-8-10", false),
            ("meta-data", false),
            ("", false),
        ] {
            assert_eq!(is_version(segment), version, "{segment:?}");
        }
    }
}
