//! multi_host: a compute host's side of networking. `PlumbedDriver` wraps a virt driver and, before an
//! instance is plugged in, has this host's dataplane ensure the bridge and segment of each of its networks,
//! as nova-network did on every compute host in multi_host mode. Addresses, DHCP and NAT stay on the network
//! host, reached over the segment.

use std::sync::Arc;

use nimbus_protocol::compute::{Capacity, InstanceSpec, PowerAction, VirtError};
use nimbus_protocol::failure::Failure;
use nimbus_protocol::firewall::HostFirewall;
use nimbus_protocol::ids::InstanceId;

use super::virt::{DriverFuture, VirtDriver};
use crate::dataplane::{Dataplane, HostSegment};

pub struct PlumbedDriver {
    pub dataplane: Arc<dyn Dataplane>,
    pub inner: Arc<dyn VirtDriver>,
}

impl PlumbedDriver {
    /// The host segments `spec`'s interfaces plug into.
    pub fn segments(spec: &InstanceSpec) -> Vec<HostSegment> {
        spec.interfaces
            .iter()
            .map(|nic| HostSegment {
                network: nic.network,
                bridge: nic.bridge.clone(),
                bridge_interface: nic.bridge_interface.clone(),
                vlan: nic.vlan,
                mtu: nic.mtu,
            })
            .collect()
    }

    /// Has this host's dataplane ensure the segment of each of `spec`'s networks.
    async fn ensure_segments(&self, spec: &InstanceSpec) -> Result<(), Failure> {
        for segment in PlumbedDriver::segments(spec) {
            self.dataplane.ensure_host_segment(segment).await.map_err(|e| Failure::of(&e))?;
        }
        Ok(())
    }
}

impl VirtDriver for PlumbedDriver {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capacity(&self) -> Capacity {
        self.inner.capacity()
    }

    fn spawn(&self, spec: InstanceSpec) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            let id = spec.id;
            self.ensure_segments(&spec).await.map_err(|cause| VirtError::Spawn { id, cause })?;
            self.inner.spawn(spec).await
        })
    }

    fn set_interfaces(&self, spec: InstanceSpec) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            let id = spec.id;
            self.ensure_segments(&spec).await.map_err(|cause| VirtError::Interfaces { id, cause })?;
            self.inner.set_interfaces(spec).await
        })
    }

    fn destroy(&self, id: InstanceId) -> DriverFuture<'_, ()> {
        self.inner.destroy(id)
    }

    fn power(&self, id: InstanceId, action: PowerAction) -> DriverFuture<'_, ()> {
        self.inner.power(id, action)
    }

    fn list(&self) -> DriverFuture<'_, Vec<InstanceId>> {
        self.inner.list()
    }

    fn filters_ports(&self) -> bool {
        self.inner.filters_ports()
    }

    fn set_firewall(&self, firewall: HostFirewall) -> DriverFuture<'_, ()> {
        self.inner.set_firewall(firewall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::virt::{FakeHypervisor, contract};
    use crate::dataplane::SimDataplane;
    use nimbus_protocol::compute::{Addressing, NicSpec};
    use nimbus_protocol::ids::{NetworkId, PortId};

    #[tokio::test]
    async fn a_plumbed_driver_keeps_the_contract_and_ensures_the_segments_first() {
        let sim = Arc::new(SimDataplane::new());
        let fake = Arc::new(FakeHypervisor::new(Capacity::default()));
        let plumbed = PlumbedDriver { dataplane: sim.clone(), inner: fake.clone() };
        contract::check(&plumbed).await;

        let mut spec = contract::spec(7);
        spec.interfaces.push(NicSpec {
            port: PortId::generate(),
            network: NetworkId::generate(),
            network_label: "tenants_0".into(),
            mac: "fa:16:3e:00:00:07".into(),
            address: "10.2.0.3".parse().unwrap(),
            cidr: "10.2.0.0/24".parse().unwrap(),
            gateway: "10.2.0.1".parse().unwrap(),
            addressing: Addressing::Dhcp,
            bridge: "br-vlan100".into(),
            bridge_interface: None,
            vlan: Some(100),
            hostname: "vm".into(),
            mtu: Some(1400),
        });
        plumbed.spawn(spec.clone()).await.unwrap();
        let segments: Vec<HostSegment> = sim.state().host_segments.into_values().collect();
        assert_eq!(segments, PlumbedDriver::segments(&spec));
        assert_eq!(fake.running().len(), 1);
    }
}
