//! Compute API microversions: the one a request asks for (`OpenStack-API-Version: compute 2.N`, or the older
//! `X-OpenStack-Nova-API-Version: 2.N`), the range nimbus implements, and the extractor handlers read it with.
//! What each step changed is where the change is made, as `v.has(N)`:
//!
//! | step | change | in nimbus |
//! | --- | --- | --- |
//! | 2.2 | key pair `type`, 201 / 204 | `key_pairs_api` (SSH keys only: `x509` is refused) |
//! | 2.3 | an admin's extended server attributes | `compute_api` |
//! | 2.4 | os-fixed-ips `reserved` | `nova_network_api` |
//! | 2.5 | the `ip6` filter for members | nothing: nimbus is IPv4, `ip6` is refused at every version |
//! | 2.6, 2.8 | remote consoles (`mks` at 2.8) | `compute_api`: refused with the reason, instances have none |
//! | 2.7 | flavor access checks `is_public` | nothing: nimbus has no flavor-access API |
//! | 2.9 | `locked` | `compute_api` (never locked: nimbus has no lock) |
//! | 2.10 | key pairs of another user (admin) | `key_pairs_api` |
//! | 2.11 | services' `forced_down` and `PUT os-services/force-down` | `hypervisors_api` (a forced-down host counts as down) |
//! | 2.12–2.15, 2.20–2.25, 2.29–2.31, 2.34 | virtual interfaces, server groups, evacuate, volumes, instance actions, migrations, consoles' tokens | nothing: nimbus has none of these APIs |
//! | 2.16 | `host_status` (admin) | `compute_api` |
//! | 2.17 | `trigger_crash_dump` | `compute_api`: refused with the reason |
//! | 2.18 | the project id leaves the URLs | nothing: nimbus's URLs never had it |
//! | 2.19 | server `description` | `compute_api` |
//! | 2.26 | server tags, their API and list filters | `compute_api` |
//! | 2.27 | the `OpenStack-API-Version` header | this module (taken at every version) |
//! | 2.28 | hypervisors' `cpu_info` as an object | `hypervisors_api` |
//! | 2.32 | device tags on requested networks | `compute_api`, the metadata service's `devices` |
//! | 2.33, 2.35 | hypervisor and key pair lists by pages | `hypervisors_api`, `key_pairs_api` |
//! | 2.36 | the proxy APIs and the network quotas go | [`Microversion::removed`], `nova_network_api` |

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::app::error::CloudError;

/// A compute microversion, `2.N`, kept as `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion(pub u16);

impl Microversion {
    /// 2.1: what a client that asks for no microversion gets.
    pub const MIN: Microversion = Microversion(1);
    /// The newest nimbus implements.
    pub const MAX: Microversion = Microversion(36);
    /// [`Microversion::MAX`] as the version document writes it.
    pub const MAX_TEXT: &'static str = "2.36";

    /// Whether the request's version has the change of `2.minor`.
    pub fn has(self, minor: u16) -> bool {
        self.0 >= minor
    }

    /// The version the request asks for: 2.1 if it names none, the newest for `latest`; a version outside
    /// nimbus's range, or one that is not `2.N`, is refused (406, as nova answers).
    pub fn requested(headers: &HeaderMap) -> Result<Microversion, CloudError> {
        let asked = headers
            .get("openstack-api-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("compute").map(|v| v.trim().to_string()))
            .or_else(|| headers.get("x-openstack-nova-api-version").and_then(|v| v.to_str().ok()).map(str::to_string));
        let Some(asked) = asked else { return Ok(Microversion::MIN) };
        let asked = asked.trim();
        if asked == "latest" {
            return Ok(Microversion::MAX);
        }
        let refused = || {
            CloudError::NotAcceptable(format!(
                "Version {asked} is not supported by the API. Minimum is {} and maximum is {}.",
                Microversion::MIN,
                Microversion::MAX
            ))
        };
        let minor = asked.strip_prefix("2.").and_then(|n| n.parse::<u16>().ok()).ok_or_else(refused)?;
        let version = Microversion(minor);
        if version < Microversion::MIN || version > Microversion::MAX {
            return Err(refused());
        }
        Ok(version)
    }
}

/// The compute API's proxies to the network and image services, gone from 2.36 on (404).
const PROXIES: &[&str] = &[
    "/compute/v2.1/images",
    "/compute/v2.1/os-networks",
    "/compute/v2.1/os-tenant-networks",
    "/compute/v2.1/os-fixed-ips",
    "/compute/v2.1/os-floating-ips",
    "/compute/v2.1/os-floating-ips-bulk",
    "/compute/v2.1/os-floating-ip-pools",
    "/compute/v2.1/os-floating-ip-dns",
    "/compute/v2.1/os-security-groups",
    "/compute/v2.1/os-security-group-rules",
    "/compute/v2.1/os-security-group-default-rules",
];

impl Microversion {
    /// Whether `path` is an API this version no longer has.
    pub fn removed(self, path: &str) -> bool {
        self.has(36)
            && PROXIES.iter().any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
    }
}

impl std::fmt::Display for Microversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "2.{}", self.0)
    }
}

/// The version the middleware negotiated for the request (2.1 outside the compute API).
impl<S: Send + Sync> FromRequestParts<S> for Microversion {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Microversion>().copied().unwrap_or(Microversion::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(header: &str, value: &str) -> Result<Microversion, String> {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::HeaderName::from_bytes(header.as_bytes()).unwrap(), value.parse().unwrap());
        Microversion::requested(&headers).map_err(|e| e.to_string())
    }

    #[test]
    fn the_proxy_apis_are_gone_from_2_36() {
        for (path, gone) in [
            ("/compute/v2.1/os-networks", true),
            ("/compute/v2.1/os-networks/add", true),
            ("/compute/v2.1/os-floating-ips-bulk", true),
            ("/compute/v2.1/os-floating-ip-pools", true),
            ("/compute/v2.1/os-security-groups", true),
            ("/compute/v2.1/os-fixed-ips/10.0.0.5", true),
            ("/compute/v2.1/servers/x/os-security-groups", false),
            ("/compute/v2.1/os-networksx", false),
            ("/compute/v2.1/os-keypairs", false),
        ] {
            assert_eq!(Microversion(36).removed(path), gone, "{path}");
            assert!(!Microversion(35).removed(path), "{path} is there at 2.35");
        }
    }

    #[test]
    fn the_newest_version_reads_as_its_text() {
        assert_eq!(Microversion::MAX.to_string(), Microversion::MAX_TEXT);
    }

    #[test]
    fn the_requested_version_is_read_from_either_header_within_the_range() {
        assert_eq!(Microversion::requested(&HeaderMap::new()).ok(), Some(Microversion(1)), "none asked: 2.1");
        for (header, value, expected) in [
            ("OpenStack-API-Version", "compute 2.1", Ok(Microversion(1))),
            ("OpenStack-API-Version", "compute 2.9", Ok(Microversion(9))),
            ("OpenStack-API-Version", "compute 2.36", Ok(Microversion(36))),
            ("OpenStack-API-Version", "compute latest", Ok(Microversion::MAX)),
            ("X-OpenStack-Nova-API-Version", "2.2", Ok(Microversion(2))),
            ("X-OpenStack-Nova-API-Version", "latest", Ok(Microversion::MAX)),
        ] {
            assert_eq!(asked(header, value), expected, "{header}: {value}");
        }
        for value in ["compute 2.0", "compute 2.37", "compute 2.90", "compute 3.1", "compute two", "compute 2."] {
            let refused = asked("OpenStack-API-Version", value).unwrap_err();
            assert!(refused.contains("Minimum is 2.1"), "{value}: {refused}");
        }
    }
}
