//! Compute API microversions: the one a request asks for (`OpenStack-API-Version: compute 2.N`, or the older
//! `X-OpenStack-Nova-API-Version: 2.N`), the range nimbus implements, and the extractor handlers read it with.
//! What each step changed is where the change is made, marked with its version.

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
    pub const MAX: Microversion = Microversion(19);
    /// [`Microversion::MAX`] as the version document writes it.
    pub const MAX_TEXT: &'static str = "2.19";

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
    fn the_newest_version_reads_as_its_text() {
        assert_eq!(Microversion::MAX.to_string(), Microversion::MAX_TEXT);
    }

    #[test]
    fn the_requested_version_is_read_from_either_header_within_the_range() {
        assert_eq!(Microversion::requested(&HeaderMap::new()).ok(), Some(Microversion(1)), "none asked: 2.1");
        for (header, value, expected) in [
            ("OpenStack-API-Version", "compute 2.1", Ok(Microversion(1))),
            ("OpenStack-API-Version", "compute 2.9", Ok(Microversion(9))),
            ("OpenStack-API-Version", "compute latest", Ok(Microversion::MAX)),
            ("X-OpenStack-Nova-API-Version", "2.2", Ok(Microversion(2))),
            ("X-OpenStack-Nova-API-Version", "latest", Ok(Microversion::MAX)),
        ] {
            assert_eq!(asked(header, value), expected, "{header}: {value}");
        }
        for value in ["compute 2.0", "compute 2.90", "compute 3.1", "compute two", "compute 2."] {
            let refused = asked("OpenStack-API-Version", value).unwrap_err();
            assert!(refused.contains("Minimum is 2.1"), "{value}: {refused}");
        }
    }
}
