//! Virt drivers: the one contract compute agents run instances through, and the `fake` driver. Drivers run
//! what they are sent ([`InstanceSpec`]s) and know nothing of the store.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use nimbus_protocol::compute::{Capacity, InstanceSpec, PowerAction, VirtError};
use nimbus_protocol::failure::Failure;
use nimbus_protocol::firewall::HostFirewall;
use nimbus_protocol::ids::InstanceId;

pub type DriverFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, VirtError>> + Send + 'a>>;

/// The contract of a virt driver. Spawn and destroy are idempotent: spawning a running instance and
/// destroying a missing one succeed, so a resumed operation can simply do its step again. A spawn that fails
/// leaves nothing of the instance: the conductor may place it elsewhere. A driver that filters ports
/// enforces the last [`HostFirewall`] it was given on the ports of the instances it runs, and lets an instance
/// port it has no rules for send and take nothing but DHCP.
pub trait VirtDriver: Send + Sync + 'static {
    /// `fake`, `netns`, …: what `os-hypervisors` shows as the hypervisor type.
    fn kind(&self) -> &'static str;
    fn capacity(&self) -> Capacity;
    fn spawn(&self, spec: InstanceSpec) -> DriverFuture<'_, ()>;
    fn destroy(&self, id: InstanceId) -> DriverFuture<'_, ()>;
    /// Powers a running instance off or on, reboots, pauses, suspends it or undoes that; idempotent (an
    /// action whose end state the instance is in already succeeds). An instance it does not run is an error.
    fn power(&self, id: InstanceId, action: PowerAction) -> DriverFuture<'_, ()>;
    /// Gives a running instance exactly `spec`'s interfaces, in order: those it lacks are plugged, those it has
    /// no longer are unplugged, the others are left alone (idempotent). An instance it does not run is an
    /// error.
    fn set_interfaces(&self, spec: InstanceSpec) -> DriverFuture<'_, ()>;
    /// The instances the hypervisor runs now, for reconciliation with the store.
    fn list(&self) -> DriverFuture<'_, Vec<InstanceId>>;
    /// Whether it enforces security groups: its agent then follows the host's firewall.
    fn filters_ports(&self) -> bool;
    /// Replaces the firewall it enforces, at once: no packet sees a mix of the old and the new rules.
    fn set_firewall(&self, firewall: HostFirewall) -> DriverFuture<'_, ()>;
}

/// What a guest is doing, as a hypervisor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestPower {
    Running,
    Off,
    Paused,
    Suspended,
}

impl GuestPower {
    /// Where `action` takes a guest.
    pub fn after(action: PowerAction) -> GuestPower {
        match action {
            PowerAction::Stop => GuestPower::Off,
            PowerAction::Pause => GuestPower::Paused,
            PowerAction::Suspend => GuestPower::Suspended,
            PowerAction::Start
            | PowerAction::SoftReboot
            | PowerAction::HardReboot
            | PowerAction::Unpause
            | PowerAction::Resume => GuestPower::Running,
        }
    }
}

/// An in-memory hypervisor: instant, with a configurable capacity and failure injection for tests. One per
/// simulated host; it outlives the agent actor (a real hypervisor keeps running when its agent restarts),
/// but not the process.
#[derive(Debug, Default)]
pub struct FakeHypervisor {
    capacity: Capacity,
    running: Mutex<HashMap<InstanceId, (InstanceSpec, GuestPower)>>,
    fail_next: AtomicU32,
    broken: AtomicBool,
    /// Records the firewalls it is sent (the simulated enforcement), if made [`FakeHypervisor::filtering`].
    filtering: bool,
    firewall: Mutex<Option<HostFirewall>>,
}

impl FakeHypervisor {
    /// What the simulated hosts report as their hypervisor type.
    pub const KIND: &'static str = "fake";

    pub fn new(capacity: Capacity) -> FakeHypervisor {
        FakeHypervisor { capacity, ..FakeHypervisor::default() }
    }

    /// A fake host that follows its firewall as a real one does, recording what it would enforce. Not the
    /// default: a benchmark's thousands of hosts would each have their firewall computed on every change.
    pub fn filtering(capacity: Capacity) -> FakeHypervisor {
        FakeHypervisor { capacity, filtering: true, ..FakeHypervisor::default() }
    }

    /// The firewall it was last sent.
    pub fn firewall(&self) -> Option<HostFirewall> {
        self.firewall.lock().expect("fake hypervisor lock").clone()
    }

    /// Makes the next `n` spawns fail.
    pub fn fail_next_spawns(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Makes every spawn fail (`true`) or none (`false`).
    pub fn set_broken(&self, broken: bool) {
        self.broken.store(broken, Ordering::SeqCst);
    }

    /// The instances it runs, in whatever power state.
    pub fn running(&self) -> Vec<InstanceSpec> {
        self.running.lock().expect("fake hypervisor lock").values().map(|(spec, _)| spec.clone()).collect()
    }

    /// The power state of an instance it runs.
    pub fn power_of(&self, id: InstanceId) -> Option<GuestPower> {
        self.running.lock().expect("fake hypervisor lock").get(&id).map(|(_, power)| *power)
    }

    fn take_injected_failure(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
            || self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

impl VirtDriver for FakeHypervisor {
    fn kind(&self) -> &'static str {
        FakeHypervisor::KIND
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn spawn(&self, spec: InstanceSpec) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            let mut running = self.running.lock().expect("fake hypervisor lock");
            if running.contains_key(&spec.id) {
                return Ok(());
            }
            if self.take_injected_failure() {
                return Err(VirtError::Spawn { id: spec.id, cause: Failure::message("injected failure") });
            }
            running.insert(spec.id, (spec, GuestPower::Running));
            Ok(())
        })
    }

    fn destroy(&self, id: InstanceId) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            self.running.lock().expect("fake hypervisor lock").remove(&id);
            Ok(())
        })
    }

    fn power(&self, id: InstanceId, action: PowerAction) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            match self.running.lock().expect("fake hypervisor lock").get_mut(&id) {
                Some((_, power)) => {
                    *power = GuestPower::after(action);
                    Ok(())
                }
                None => Err(VirtError::Power { id, action, cause: Failure::message("no such instance here") }),
            }
        })
    }

    fn set_interfaces(&self, spec: InstanceSpec) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            match self.running.lock().expect("fake hypervisor lock").get_mut(&spec.id) {
                Some((running, _)) => {
                    running.interfaces = spec.interfaces;
                    Ok(())
                }
                None => Err(VirtError::Interfaces { id: spec.id, cause: Failure::message("no such instance here") }),
            }
        })
    }

    fn list(&self) -> DriverFuture<'_, Vec<InstanceId>> {
        Box::pin(async move { Ok(self.running.lock().expect("fake hypervisor lock").keys().copied().collect()) })
    }

    fn filters_ports(&self) -> bool {
        self.filtering
    }

    fn set_firewall(&self, firewall: HostFirewall) -> DriverFuture<'_, ()> {
        Box::pin(async move {
            *self.firewall.lock().expect("fake hypervisor lock") = Some(firewall);
            Ok(())
        })
    }
}

/// The behaviour every virt driver shares; each driver's tests run it (the `netns` driver's too, as root).
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub(crate) fn spec(n: u8) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId(uuid::Uuid::from_bytes([n; 16])),
            name: format!("contract-{n}"),
            vcpus: 1,
            ram_mb: 64,
            disk_gb: 1,
            interfaces: Vec::new(),
        }
    }

    pub async fn check(driver: &dyn VirtDriver) {
        let (a, b) = (spec(1), spec(2));
        driver.spawn(a.clone()).await.expect("spawn a");
        driver.spawn(a.clone()).await.expect("spawning a running instance again succeeds");
        driver.spawn(b.clone()).await.expect("spawn b");
        let mut listed = driver.list().await.unwrap();
        listed.sort();
        assert_eq!(listed, vec![a.id, b.id]);
        for action in [
            PowerAction::Stop,
            PowerAction::Stop,
            PowerAction::Start,
            PowerAction::SoftReboot,
            PowerAction::Pause,
            PowerAction::Unpause,
            PowerAction::Suspend,
            PowerAction::Resume,
            PowerAction::Stop,
            PowerAction::HardReboot,
        ] {
            driver.power(a.id, action).await.unwrap_or_else(|e| panic!("{action:?}: {e}"));
        }
        assert!(driver.power(spec(9).id, PowerAction::Stop).await.is_err(), "an instance it does not run");
        driver.set_interfaces(a.clone()).await.expect("the interfaces it has already");
        assert!(driver.set_interfaces(spec(9)).await.is_err(), "interfaces of an instance it does not run");
        driver.destroy(a.id).await.expect("destroy a");
        driver.destroy(a.id).await.expect("destroying a missing instance succeeds");
        assert_eq!(driver.list().await.unwrap(), vec![b.id]);
        driver.destroy(b.id).await.unwrap();
        assert!(driver.list().await.unwrap().is_empty());
    }

    /// `failing` is a spawn the driver cannot do.
    pub async fn check_failed_spawn(driver: &dyn VirtDriver, failing: InstanceSpec) {
        assert!(driver.spawn(failing.clone()).await.is_err(), "the spawn fails");
        assert!(!driver.list().await.unwrap().contains(&failing.id), "nothing of the failed spawn is left");
    }

    #[tokio::test]
    async fn the_fake_driver_keeps_the_contract() {
        let fake = FakeHypervisor::new(Capacity::default());
        check(&fake).await;
        fake.fail_next_spawns(1);
        check_failed_spawn(&fake, spec(5)).await;
    }

    #[tokio::test]
    async fn the_fake_driver_injects_failures_on_request() {
        let fake = FakeHypervisor::new(Capacity::default());
        fake.fail_next_spawns(1);
        assert!(fake.spawn(spec(3)).await.is_err());
        assert!(fake.spawn(spec(3)).await.is_ok(), "only the next spawn fails");
        fake.set_broken(true);
        assert!(fake.spawn(spec(4)).await.is_err());
        assert_eq!(fake.list().await.unwrap(), vec![spec(3).id]);
    }
}
