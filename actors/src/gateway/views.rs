//! The JSON shapes several APIs share: links and version documents.

use serde::Serialize;

#[derive(Serialize)]
pub struct Link {
    pub rel: &'static str,
    pub href: String,
}

impl Link {
    pub fn to_self(href: String) -> Link {
        Link { rel: "self", href }
    }

    pub fn bookmark(href: String) -> Link {
        Link { rel: "bookmark", href }
    }
}

#[derive(Serialize)]
pub struct MediaType {
    pub base: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// One version of an API, as its version document lists it. Image and Network show only an id, a status and
/// a link; Identity adds when it was updated and its media type; Compute also its microversions.
#[derive(Serialize)]
pub struct VersionDoc {
    pub id: &'static str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<&'static str>,
    pub links: [Link; 1],
    #[serde(rename = "media-types", skip_serializing_if = "Option::is_none")]
    pub media_types: Option<[MediaType; 1]>,
}

impl VersionDoc {
    /// A version with only an id, a status and its `self` link.
    pub fn plain(id: &'static str, status: &'static str, href: String) -> VersionDoc {
        VersionDoc {
            id,
            status,
            version: None,
            min_version: None,
            updated: None,
            links: [Link::to_self(href)],
            media_types: None,
        }
    }
}
