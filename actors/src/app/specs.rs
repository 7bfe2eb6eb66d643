//! The specs compute agents are sent, built from the store's records: the wire format is its own, so agents
//! need nothing of the store.

use nimbus_protocol::compute::{Addressing, InstanceSpec, NicSpec};
use nimbus_storage::records::Instance;
use nimbus_storage::schema::NETWORKS;
use nimbus_storage::{Reads, StoreError};

use crate::names::dhcp_hostname;

/// The spec of `instance`, with what its networks tell about each interface.
pub fn instance_spec(r: &impl Reads, instance: &Instance) -> Result<InstanceSpec, StoreError> {
    let mut interfaces = Vec::with_capacity(instance.interfaces.len());
    for port in &instance.interfaces {
        // A network deleted under a running instance leaves nothing to plug into.
        let Some(network) = r.get(&NETWORKS, &port.network)? else { continue };
        interfaces.push(NicSpec {
            port: port.id,
            network: port.network,
            network_label: port.network_label.clone(),
            mac: port.mac.clone(),
            address: port.address,
            cidr: network.cidr,
            gateway: network.gateway,
            addressing: if network.mode.has_dhcp() { Addressing::Dhcp } else { Addressing::Injected },
            bridge: network.bridge,
            bridge_interface: network.bridge_interface,
            vlan: network.vlan,
            hostname: dhcp_hostname(&instance.name, instance.id),
            mtu: network.mtu,
        });
    }
    Ok(InstanceSpec {
        id: instance.id,
        name: instance.name.clone(),
        vcpus: instance.flavor.vcpus,
        ram_mb: instance.flavor.ram_mb,
        disk_gb: instance.flavor.disk_gb,
        interfaces,
    })
}
