//! The NAT side of the network host: the `ip nimbus` table (floating-IP DNAT / SNAT, the VPN forwards, SNAT
//! of the fixed ranges, isolation) and the floating addresses bound to the public interfaces, marked with
//! nimbus's address protocol so only its own are ever removed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use nimbus_protocol::ids::ProjectId;

use super::Inner;
use crate::dataplane::{METADATA_ADDRESS, METADATA_PORT, Nat, VpnForward};
use crate::kernel::nft::{self, FloatingRule, MetadataRule, NatTable, VpnRule};
use crate::kernel::{KernelError, netlink};

/// The address protocol (`ip address … proto 110`) that marks floating addresses as nimbus's.
pub const FLOATING_ADDRESS_PROTOCOL: u8 = 110;

#[derive(Default)]
pub(super) struct NatState {
    /// The last NAT state asked for; `None` until the first `apply_nat` since the driver started, so a VPN
    /// change before it cannot replace the table without the floating addresses.
    pub(super) nat: Option<Nat>,
    pub(super) vpns: BTreeMap<ProjectId, VpnForward>,
}

impl Inner {
    pub(super) async fn apply_nat(&self, state: &NatState) -> Result<(), KernelError> {
        let nat = state.nat.clone().unwrap_or_default();
        let table = NatTable {
            floating: nat.floating.iter().map(|f| FloatingRule { floating: f.floating, fixed: f.fixed }).collect(),
            vpns: state
                .vpns
                .values()
                .map(|v| VpnRule { public: v.public_address, port: v.public_port, private: v.private_address })
                .collect(),
            fixed_ranges: nat.snat_ranges.iter().copied().collect(),
            metadata: nat
                .metadata
                .iter()
                .map(|m| MetadataRule {
                    bridge: m.bridge.clone(),
                    address: METADATA_ADDRESS,
                    to: SocketAddrV4::new(m.gateway, METADATA_PORT),
                })
                .collect(),
        };
        // Addresses first, so a new floating address answers ARP by the time its DNAT rule exists.
        let wanted: BTreeSet<(Ipv4Addr, String)> =
            nat.floating.iter().map(|f| (f.floating, f.interface.clone())).collect();
        let missing = netlink::in_netns(self.netns(), move |h| async move { bind_floating(&h, &wanted).await }).await?;
        nft::apply(self.netns(), &nft::replace_table(nft::NAT_TABLE, nft::nat_body(&table).as_deref())).await?;
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<String> = missing.into_iter().collect();
        Err(KernelError::Unsupported(format!(
            "the public interface {} of a floating pool does not exist on the network host, so its floating \
             addresses are not bound (create the interface, or the pool with --interface naming one that exists)",
            missing.join(", ")
        )))
    }
}

/// Makes the floating addresses bound to the public interfaces exactly `wanted`, leaving every address not
/// marked as nimbus's alone. Returns the interfaces that do not exist (their addresses cannot be bound; the
/// rest are).
async fn bind_floating(
    h: &rtnetlink::Handle,
    wanted: &BTreeSet<(Ipv4Addr, String)>,
) -> Result<BTreeSet<String>, KernelError> {
    let links = netlink::links(h).await?;
    let names: BTreeMap<u32, &String> = links.iter().map(|(name, index)| (*index, name)).collect();
    let mut present = BTreeSet::new();
    for a in netlink::addresses(h, None).await? {
        let Some(link) = names.get(&a.link).filter(|_| a.protocol == Some(FLOATING_ADDRESS_PROTOCOL)) else {
            continue;
        };
        if wanted.contains(&(a.address, link.to_string())) {
            present.insert((a.address, link.to_string()));
        } else {
            netlink::delete_address(h, a.message).await?;
        }
    }
    let mut missing = BTreeSet::new();
    for (address, interface) in wanted.difference(&present) {
        match links.get(interface) {
            Some(index) => netlink::add_address(h, *index, *address, 32, Some(FLOATING_ADDRESS_PROTOCOL)).await?,
            None => {
                missing.insert(interface.clone());
            }
        }
    }
    Ok(missing)
}
