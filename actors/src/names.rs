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
}
