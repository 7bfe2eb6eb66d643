//! Network v2.0 (the Neutron subset the modern clients need), over the same model as the nova-network era
//! endpoints: fixed networks and floating pools as networks (pools are `router:external`), one subnet per
//! network (it shares the network's id and is its range), instance interfaces and standalone ports as
//! ports, and floating IPs. Lists take filters on every field, `fields=`, `sort_key`/`sort_dir` and
//! `limit`/`marker`; creates take one resource or a bulk list.

mod floating;
mod networks;
mod ports;

use std::cmp::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::views::VersionDoc;
use super::{ApiError, AppState};
use crate::app::error::CloudError;

type ApiResult = Result<Response, ApiError>;

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/network", get(versions))
        .route("/network/", get(versions))
        .route("/network/v2.0/extensions", get(extensions))
        .route("/network/v2.0/extensions/{alias}", get(extension))
        .merge(networks::routes())
        .merge(ports::routes())
        .merge(floating::routes())
}

async fn versions(State(s): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Body {
        versions: [VersionDoc; 1],
    }
    let version = VersionDoc::plain("v2.0", "CURRENT", format!("{}/network/v2.0/", s.base_url));
    Json(Body { versions: [version] }).into_response()
}

/// The Network API extensions nimbus implements (clients ask before using one): alias, name, what it adds.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    ("security-group", "security-group", "Security groups and their rules."),
    ("external-net", "Neutron external network", "router:external: the floating pools."),
    ("provider", "Provider Network", "provider:network_type and provider:segmentation_id (flat or vlan)."),
    ("port-security", "Port Security", "port_security_enabled (always on: anti-spoofing)."),
    ("binding", "Port Binding", "binding:host_id, the host of the port's instance."),
];

#[derive(Serialize)]
struct ExtensionView {
    alias: &'static str,
    name: &'static str,
    description: &'static str,
    updated: &'static str,
    links: [String; 0],
}

fn extension_view(&(alias, name, description): &(&'static str, &'static str, &'static str)) -> ExtensionView {
    ExtensionView { alias, name, description, updated: "2013-01-01T00:00:00-00:00", links: [] }
}

async fn extensions() -> Response {
    Json(serde_json::json!({ "extensions": EXTENSIONS.iter().map(extension_view).collect::<Vec<_>>() })).into_response()
}

async fn extension(axum::extract::Path(alias): axum::extract::Path<String>) -> ApiResult {
    let found = EXTENSIONS.iter().find(|(a, _, _)| *a == alias).ok_or_else(|| {
        ApiError::network(CloudError::NotFound(format!("Extension with alias {alias} does not exist.")))
    })?;
    Ok(Json(serde_json::json!({ "extension": extension_view(found) })).into_response())
}

fn bad(message: String) -> ApiError {
    ApiError::network(CloudError::BadRequest(message))
}

/// A list or show request's query: filters on fields, the fields to answer with, sorting and a page.
#[derive(Debug, Default)]
pub(super) struct ListQuery {
    filters: Vec<(String, Vec<String>)>,
    fields: Vec<String>,
    sort: Vec<(String, bool)>,
    limit: Option<usize>,
    marker: Option<String>,
    /// The query as given, for the next page's link.
    raw: Vec<(String, String)>,
}

impl ListQuery {
    /// Parses `query` for a resource whose views have the fields `known`; a filter, field or sort key
    /// that is not one of them is a 400 rather than a silently unfiltered answer.
    pub(super) fn parse(query: Option<&str>, known: &[&str]) -> Result<ListQuery, ApiError> {
        let raw: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
            .map_err(|e| bad(format!("The query string is malformed: {e}.")))?;
        let mut q = ListQuery { raw: raw.clone(), ..ListQuery::default() };
        let check = |key: &str, what: &str| {
            if known.contains(&key) { Ok(()) } else { Err(bad(format!("{what} {key} is not supported here."))) }
        };
        let mut directions = Vec::new();
        for (key, value) in raw {
            match key.as_str() {
                // Repeated (`fields=id&fields=name`) or in one (`fields=id,name`).
                "fields" => {
                    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        check(field, "Field")?;
                        q.fields.push(field.to_string());
                    }
                }
                "sort_key" => {
                    check(&value, "Sort key")?;
                    q.sort.push((value, true));
                }
                "sort_dir" => directions.push(match value.as_str() {
                    "asc" => true,
                    "desc" => false,
                    other => return Err(bad(format!("Invalid sort_dir {other:?}: use asc or desc."))),
                }),
                "limit" => {
                    let limit = value.parse::<usize>().ok().filter(|n| *n > 0);
                    q.limit = Some(limit.ok_or_else(|| bad(format!("Invalid limit {value:?}: a positive integer.")))?);
                }
                "marker" => q.marker = Some(value),
                _ => {
                    check(&key, "Filter")?;
                    match q.filters.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, values)) => values.push(value),
                        None => q.filters.push((key, vec![value])),
                    }
                }
            }
        }
        if directions.len() > q.sort.len() || (!directions.is_empty() && directions.len() != q.sort.len()) {
            return Err(bad("Give one sort_dir for each sort_key, or none.".into()));
        }
        for (sort, asc) in q.sort.iter_mut().zip(directions) {
            sort.1 = asc;
        }
        Ok(q)
    }

    fn matches(&self, view: &Map<String, Value>) -> bool {
        self.filters
            .iter()
            .all(|(key, wanted)| view.get(key).is_some_and(|v| wanted.iter().any(|w| value_matches(v, w))))
    }

    /// The view with only the fields asked for (all if none were).
    fn select(&self, mut view: Map<String, Value>) -> Map<String, Value> {
        if !self.fields.is_empty() {
            view.retain(|k, _| self.fields.contains(k));
        }
        view
    }
}

/// Whether a field's value is what a filter asks: strings, numbers and booleans by their text; a list if
/// one of its items is (`security_groups=…`), or, for a list of objects, if one has `key=value`
/// (`fixed_ips=ip_address=10.0.0.5`).
fn value_matches(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s == wanted,
        Value::Bool(b) => wanted.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Number(n) => n.to_string() == wanted,
        Value::Null => wanted.is_empty(),
        Value::Array(items) => items.iter().any(|item| match item {
            Value::Object(o) => {
                wanted.split_once('=').is_some_and(|(k, v)| o.get(k).is_some_and(|field| value_matches(field, v)))
            }
            other => value_matches(other, wanted),
        }),
        Value::Object(_) => false,
    }
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn to_map(view: impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(view).expect("a view serializes") {
        Value::Object(map) => map,
        _ => unreachable!("views are structs"),
    }
}

/// The answer to a list: the views the filters keep, sorted, a page of them with a `next` link if more
/// remain, each with the fields asked for.
pub(super) fn list_answer<V: Serialize>(
    s: &AppState,
    collection: &str,
    path: &str,
    views: impl IntoIterator<Item = V>,
    q: &ListQuery,
) -> ApiResult {
    let mut kept: Vec<Map<String, Value>> = views.into_iter().map(to_map).filter(|v| q.matches(v)).collect();
    if !q.sort.is_empty() {
        kept.sort_by(|a, b| {
            q.sort
                .iter()
                .map(|(key, asc)| {
                    let order = compare(a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null));
                    if *asc { order } else { order.reverse() }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
    }
    if let Some(marker) = &q.marker {
        let at = kept
            .iter()
            .position(|v| v.get("id").and_then(Value::as_str) == Some(marker))
            .ok_or_else(|| ApiError::network(CloudError::NotFound(format!("Marker {marker} could not be found."))))?;
        kept.drain(..=at);
    }
    let mut body = Map::new();
    if let Some(limit) = q.limit.filter(|l| kept.len() > *l) {
        kept.truncate(limit);
        let last = kept.last().and_then(|v| v.get("id")).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut query: Vec<(String, String)> = q.raw.iter().filter(|(k, _)| k != "marker").cloned().collect();
        query.push(("marker".into(), last));
        let href = format!("{}{path}?{}", s.base_url, serde_urlencoded::to_string(&query).unwrap_or_default());
        body.insert(format!("{collection}_links"), serde_json::json!([{"rel": "next", "href": href}]));
    }
    let items: Vec<Value> = kept.into_iter().map(|v| Value::Object(q.select(v))).collect();
    body.insert(collection.to_string(), Value::Array(items));
    Ok(Json(Value::Object(body)).into_response())
}

/// The answer for one resource (`{"network": {...}}`), with the fields asked for.
fn one_answer(member: &str, view: impl Serialize, q: &ListQuery) -> Response {
    let mut body = Map::new();
    body.insert(member.to_string(), Value::Object(q.select(to_map(view))));
    Json(Value::Object(body)).into_response()
}

/// A create's body: one resource under `member`, or a bulk list under `collection`. Returns the requests
/// and whether it was a bulk create.
fn create_requests<T: DeserializeOwned>(
    body: &[u8],
    member: &str,
    collection: &str,
) -> Result<(Vec<T>, bool), ApiError> {
    let value: Value = super::errors::parse_json(body).map_err(ApiError::network)?;
    let parse = |v: &Value| {
        serde_json::from_value::<T>(v.clone())
            .map_err(|e| bad(format!("Invalid input for the request body's {member}: {e}.")))
    };
    match (value.get(member), value.get(collection)) {
        (Some(one), None) => Ok((vec![parse(one)?], false)),
        (None, Some(Value::Array(many))) if !many.is_empty() => {
            Ok((many.iter().map(parse).collect::<Result<_, _>>()?, true))
        }
        _ => Err(bad(format!("The request body needs a {member:?} object or a non-empty {collection:?} list."))),
    }
}

/// An update's body: the changes under `member`.
fn update_request<T: DeserializeOwned>(body: &[u8], member: &str) -> Result<T, ApiError> {
    let value: Value = super::errors::parse_json(body).map_err(ApiError::network)?;
    let changes = value.get(member).ok_or_else(|| bad(format!("The request body needs a {member:?} object.")))?;
    serde_json::from_value(changes.clone())
        .map_err(|e| bad(format!("Invalid input for the request body's {member}: {e}.")))
}

/// The body of a create's answer: the one resource, or the bulk list.
fn created_answer<V: Serialize>(member: &str, collection: &str, mut views: Vec<V>, bulk: bool) -> Response {
    let body = if bulk {
        serde_json::json!({ collection: views.into_iter().map(to_map).collect::<Vec<_>>() })
    } else {
        serde_json::json!({ member: to_map(views.remove(0)) })
    };
    (axum::http::StatusCode::CREATED, Json(body)).into_response()
}

/// A number a client may send as JSON text (the CLI sends `"mtu": "1400"`, which Neutron takes).
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(u32),
        Text(String),
    }
    match Option::<Given>::deserialize(d)? {
        None => Ok(None),
        Some(Given::Number(n)) => Ok(Some(n)),
        Some(Given::Text(t)) => {
            t.trim().parse().map(Some).map_err(|_| serde::de::Error::custom(format!("{t:?} is not a whole number")))
        }
    }
}

/// A field a create or update may give only with the one value nimbus has (`admin_state_up: true`, an empty
/// `description`, …): anything else is refused with `why`.
fn only<T: PartialEq + std::fmt::Debug>(field: &str, given: Option<T>, allowed: T, why: &str) -> Result<(), ApiError> {
    match given {
        Some(v) if v != allowed => Err(bad(format!("{field} {v:?} is not supported: {why}"))),
        _ => Ok(()),
    }
}

/// Asserts that `known` (a resource's filterable fields) is exactly the fields its view has.
#[cfg(test)]
pub(super) fn assert_known_fields(view: impl Serialize, known: &[&str]) {
    let mut keys: Vec<String> = to_map(view).keys().cloned().collect();
    keys.sort();
    let mut known: Vec<String> = known.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(keys, known);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compare_each_kind_of_value_by_its_text() {
        let view = to_map(serde_json::json!({
            "name": "net1", "shared": false, "mtu": 1500, "gateway_ip": null,
            "subnets": ["a", "b"], "fixed_ips": [{"subnet_id": "a", "ip_address": "10.0.0.5"}],
        }));
        let known = ["name", "shared", "mtu", "gateway_ip", "subnets", "fixed_ips"];
        for (query, keeps) in [
            ("name=net1", true),
            ("name=net2", false),
            ("name=net2&name=net1", true),
            ("shared=False", true),
            ("shared=true", false),
            ("mtu=1500", true),
            ("gateway_ip=", true),
            ("subnets=b", true),
            ("subnets=c", false),
            ("fixed_ips=ip_address%3D10.0.0.5", true),
            ("fixed_ips=ip_address%3D10.0.0.6", false),
            ("name=net1&shared=true", false),
        ] {
            let q = ListQuery::parse(Some(query), &known).unwrap();
            assert_eq!(q.matches(&view), keeps, "{query}");
        }
    }

    #[test]
    fn unknown_filters_fields_and_bad_paging_are_refused() {
        let known = ["id", "name"];
        for query in
            ["colour=red", "fields=colour", "sort_key=colour", "limit=0", "limit=x", "sort_dir=up", "sort_dir=asc"]
        {
            assert!(ListQuery::parse(Some(query), &known).is_err(), "{query}");
        }
        let q = ListQuery::parse(Some("fields=id&fields=name&sort_key=name&sort_dir=desc&limit=2"), &known).unwrap();
        assert_eq!(q.fields, ["id", "name"]);
        assert_eq!(ListQuery::parse(Some("fields=id,name"), &known).unwrap().fields, ["id", "name"]);
        assert_eq!(q.sort, [("name".to_string(), false)]);
        assert_eq!(q.limit, Some(2));
    }
}
