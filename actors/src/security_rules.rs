//! Security-group rules as clients ask for them, checked and normalized into the rule the store keeps. Both
//! APIs (Network v2.0's `security-group-rules` and nova's `os-security-group-rules`) end here, so a rule
//! means the same whichever way it came in. Pure: no store, no I/O.

use ipnetwork::Ipv4Network;
use nimbus_protocol::ids::{SecurityGroupId, SecurityRuleId};
use nimbus_storage::records::{Direction, IpProtocol, Remote, SecurityRule};

/// A rule as asked for, in Neutron's terms (nova's are mapped to them by its API).
#[derive(Clone, Debug, Default)]
pub struct RuleRequest {
    pub direction: Option<String>,
    pub ethertype: Option<String>,
    /// A name (`tcp`, `udp`, `icmp`, `any`) or an IANA number, as text.
    pub protocol: Option<String>,
    pub port_min: Option<i64>,
    pub port_max: Option<i64>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group: Option<SecurityGroupId>,
    pub description: Option<String>,
}

/// The longest description a rule keeps (Neutron's limit).
const MAX_DESCRIPTION: usize = 255;

/// The rule `request` asks for, or why it cannot be one.
pub fn rule_from(request: RuleRequest) -> Result<SecurityRule, String> {
    let direction = match request.direction.as_deref() {
        Some("ingress") => Direction::Ingress,
        Some("egress") => Direction::Egress,
        Some(other) => return Err(format!("Invalid direction {other:?}: it is ingress or egress.")),
        None => return Err("A rule needs a direction: ingress or egress.".into()),
    };
    match request.ethertype.as_deref() {
        None | Some("IPv4") => {}
        Some("IPv6") => return Err("nimbus networks are IPv4 only: a rule for IPv6 would match nothing.".into()),
        Some(other) => return Err(format!("Invalid ethertype {other:?}: nimbus supports IPv4.")),
    }
    let protocol = protocol(request.protocol.as_deref())?;
    let (port_min, port_max) = ports(protocol, request.port_min, request.port_max)?;
    let remote = match (request.remote_ip_prefix.as_deref(), request.remote_group) {
        (Some(_), Some(_)) => return Err("A rule has a remote IP prefix or a remote group, not both.".into()),
        (Some(prefix), None) => Remote::Cidr(cidr(prefix)?),
        (None, Some(group)) => Remote::Group(group),
        (None, None) => Remote::Any,
    };
    let description = request.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(format!("A rule's description is at most {MAX_DESCRIPTION} characters."));
    }
    Ok(SecurityRule { id: SecurityRuleId::generate(), direction, protocol, port_min, port_max, remote, description })
}

fn protocol(asked: Option<&str>) -> Result<Option<IpProtocol>, String> {
    match asked.map(|p| p.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "any") => Ok(None),
        Some("tcp" | "6") => Ok(Some(IpProtocol::Tcp)),
        Some("udp" | "17") => Ok(Some(IpProtocol::Udp)),
        Some("icmp" | "1") => Ok(Some(IpProtocol::Icmp)),
        Some(other) => Err(format!("Protocol {other:?} is not supported: nimbus filters tcp, udp, icmp, or any.")),
    }
}

/// TCP and UDP: a port range (one port if only the low end is given). ICMP: a type, and maybe a code.
fn ports(
    protocol: Option<IpProtocol>,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(Option<u16>, Option<u16>), String> {
    match protocol {
        None if min.is_some() || max.is_some() => {
            Err("Ports need a protocol: give tcp or udp (or icmp, for a type and code).".into())
        }
        None => Ok((None, None)),
        Some(IpProtocol::Tcp | IpProtocol::Udp) => {
            let port = |p: i64| {
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| format!("Invalid port {p}: ports are 1 to 65535."))
            };
            match (min, max) {
                (None, None) => Ok((None, None)),
                (None, Some(_)) => Err("A port range needs its low end (port_range_min).".into()),
                (Some(min), max) => {
                    let (min, max) = (port(min)?, port(max.unwrap_or(min))?);
                    if min > max {
                        return Err(format!("Invalid port range {min}-{max}: the low end is above the high end."));
                    }
                    Ok((Some(min), Some(max)))
                }
            }
        }
        Some(IpProtocol::Icmp) => {
            let byte = |what: &str, v: i64| {
                u8::try_from(v).map(u16::from).map_err(|_| format!("Invalid ICMP {what} {v}: it is 0 to 255."))
            };
            match (min, max) {
                (None, None) => Ok((None, None)),
                (None, Some(_)) => Err("An ICMP code needs its type (port_range_min).".into()),
                (Some(kind), code) => Ok((Some(byte("type", kind)?), code.map(|c| byte("code", c)).transpose()?)),
            }
        }
    }
}

/// An IPv4 prefix; host bits are cleared (`10.0.0.5/24` is `10.0.0.0/24`), as Neutron normalizes them.
fn cidr(text: &str) -> Result<Ipv4Network, String> {
    let parsed: Ipv4Network =
        text.trim().parse().map_err(|_| format!("Invalid remote IP prefix {text:?}: expected an IPv4 CIDR."))?;
    Ipv4Network::new(parsed.network(), parsed.prefix()).map_err(|e| format!("Invalid remote IP prefix {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(
        direction: &str,
        protocol: Option<&str>,
        ports: (Option<i64>, Option<i64>),
        prefix: Option<&str>,
    ) -> RuleRequest {
        RuleRequest {
            direction: Some(direction.into()),
            protocol: protocol.map(str::to_string),
            port_min: ports.0,
            port_max: ports.1,
            remote_ip_prefix: prefix.map(str::to_string),
            ..RuleRequest::default()
        }
    }

    #[test]
    fn rules_are_normalized_as_neutron_does() {
        let cidr = |s: &str| Remote::Cidr(s.parse().unwrap());
        for (request, expected) in [
            (
                ask("ingress", Some("tcp"), (Some(80), Some(80)), Some("0.0.0.0/0")),
                (Direction::Ingress, Some(IpProtocol::Tcp), Some(80), Some(80), cidr("0.0.0.0/0")),
            ),
            (
                ask("ingress", Some("6"), (Some(22), None), None),
                (Direction::Ingress, Some(IpProtocol::Tcp), Some(22), Some(22), Remote::Any),
            ),
            (
                ask("egress", Some("UDP"), (Some(1000), Some(2000)), Some("10.0.0.5/24")),
                (Direction::Egress, Some(IpProtocol::Udp), Some(1000), Some(2000), cidr("10.0.0.0/24")),
            ),
            (
                ask("ingress", Some("icmp"), (None, None), None),
                (Direction::Ingress, Some(IpProtocol::Icmp), None, None, Remote::Any),
            ),
            (
                ask("ingress", Some("1"), (Some(8), Some(0)), None),
                (Direction::Ingress, Some(IpProtocol::Icmp), Some(8), Some(0), Remote::Any),
            ),
            (
                ask("ingress", Some("icmp"), (Some(8), None), None),
                (Direction::Ingress, Some(IpProtocol::Icmp), Some(8), None, Remote::Any),
            ),
            (ask("egress", None, (None, None), None), (Direction::Egress, None, None, None, Remote::Any)),
            (ask("egress", Some("any"), (None, None), None), (Direction::Egress, None, None, None, Remote::Any)),
        ] {
            let rule = rule_from(request.clone()).unwrap_or_else(|e| panic!("{request:?}: {e}"));
            assert_eq!(
                (rule.direction, rule.protocol, rule.port_min, rule.port_max, rule.remote),
                expected,
                "{request:?}"
            );
        }
    }

    #[test]
    fn rules_nimbus_cannot_enforce_are_refused_with_the_reason() {
        let group = SecurityGroupId::generate();
        for (request, why) in [
            (RuleRequest::default(), "direction"),
            (ask("sideways", None, (None, None), None), "direction"),
            (RuleRequest { ethertype: Some("IPv6".into()), ..ask("ingress", None, (None, None), None) }, "IPv4 only"),
            (ask("ingress", Some("gre"), (None, None), None), "not supported"),
            (ask("ingress", Some("132"), (None, None), None), "not supported"),
            (ask("ingress", None, (Some(80), None), None), "need a protocol"),
            (ask("ingress", Some("tcp"), (Some(0), Some(10)), None), "1 to 65535"),
            (ask("ingress", Some("tcp"), (Some(80), Some(70_000)), None), "1 to 65535"),
            (ask("ingress", Some("tcp"), (Some(90), Some(80)), None), "above the high end"),
            (ask("ingress", Some("udp"), (None, Some(80)), None), "low end"),
            (ask("ingress", Some("icmp"), (Some(256), None), None), "0 to 255"),
            (ask("ingress", Some("icmp"), (None, Some(0)), None), "needs its type"),
            (ask("ingress", None, (None, None), Some("10.0.0.0/33")), "IPv4 CIDR"),
            (ask("ingress", None, (None, None), Some("fe80::/64")), "IPv4 CIDR"),
            (
                RuleRequest { remote_group: Some(group), ..ask("ingress", None, (None, None), Some("0.0.0.0/0")) },
                "not both",
            ),
            (RuleRequest { description: Some("d".repeat(256)), ..ask("ingress", None, (None, None), None) }, "255"),
        ] {
            let refused = rule_from(request.clone()).expect_err(why);
            assert!(refused.contains(why), "{request:?}: {refused}");
        }
    }

    #[test]
    fn two_rules_for_the_same_traffic_are_the_same_rule() {
        let a = rule_from(ask("ingress", Some("tcp"), (Some(80), None), Some("0.0.0.0/0"))).unwrap();
        let b = rule_from(RuleRequest {
            description: Some("web".into()),
            ..ask("ingress", Some("6"), (Some(80), Some(80)), Some("0.0.0.0/0"))
        })
        .unwrap();
        assert_ne!(a.id, b.id);
        assert!(a.same_traffic(&b));
        let c = rule_from(ask("egress", Some("tcp"), (Some(80), None), Some("0.0.0.0/0"))).unwrap();
        assert!(!a.same_traffic(&c));
    }
}
