//! The one rule for names people give things (projects, users, servers, images, networks, pools, security
//! groups), and the DHCP hostname an instance's name becomes.

use nimbus_protocol::ids::InstanceId;

/// Why `name` is not acceptable as the name of a `kind`, if it is not: 1 to 255 characters, printable, not
/// only spaces.
pub fn name_problem(kind: &str, name: &str) -> Option<String> {
    let acceptable = !name.trim().is_empty() && name.len() <= 255 && !name.chars().any(char::is_control);
    (!acceptable).then(|| format!("A {kind} name must be 1 to 255 printable characters, not only spaces."))
}

/// Why `name` cannot name an optional thing (a port, a subnet), if it cannot: empty is no name, else as
/// [`name_problem`].
pub fn optional_name_problem(kind: &str, name: &str) -> Option<String> {
    if name.is_empty() { None } else { name_problem(kind, name) }
}

/// The domain instances' names are under unless the operator names another (nova's `dhcp_domain`).
pub const DEFAULT_DHCP_DOMAIN: &str = "novalocal";

/// Why `domain` cannot be the instances' DNS domain, if it cannot: dot-separated labels of 1 to 63 letters,
/// digits and inner dashes, 253 characters in all.
pub fn domain_problem(domain: &str) -> Option<String> {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok))
        .then(|| format!("{domain:?} is not a DNS domain: dot-separated labels of letters, digits and inner dashes."))
}

/// A DHCP hostname for an instance: lowercase letters, digits and dashes, at most 63 characters (dnsmasq
/// silently refuses longer ones), never empty.
pub fn dhcp_hostname(name: &str, id: InstanceId) -> String {
    let mut host: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(63)
        .collect();
    while host.ends_with('-') {
        host.pop();
    }
    if host.is_empty() {
        host = format!("instance-{}", &id.to_string()[..8]);
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_safe_for_dnsmasq() {
        let id = InstanceId::generate();
        assert_eq!(dhcp_hostname("Web Server_1", id), "web-server-1");
        assert_eq!(dhcp_hostname(&"x".repeat(100), id).len(), 63);
        assert_eq!(dhcp_hostname("---", id), format!("instance-{}", &id.to_string()[..8]));
        assert_eq!(dhcp_hostname(&format!("{}-tail", "a".repeat(62)), id), "a".repeat(62));
    }

    #[test]
    fn names_are_printable_and_not_blank() {
        for (name, ok) in [("web-1", true), ("", false), ("   ", false), ("a\nb", false), (&"x".repeat(256), false)] {
            assert_eq!(name_problem("server", name).is_none(), ok, "{name:?}");
        }
    }

    #[test]
    fn dhcp_domains_are_dns_names() {
        for good in ["novalocal", "cloud.example.org", "a-b.c1"] {
            assert_eq!(super::domain_problem(good), None, "{good}");
        }
        for bad in ["", "-x", "x-", "a..b", "a b", "under_score", &"a".repeat(64)] {
            assert!(super::domain_problem(bad).is_some(), "{bad}");
        }
    }
}
