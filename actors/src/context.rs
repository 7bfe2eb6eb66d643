//! `Ctx`: what every actor of a cloud shares (the store, the namespace, the timing settings).

use std::sync::Arc;
use std::time::Duration;

use nimbus_runtime::Namespace;
use nimbus_storage::Store;

use crate::network::dataplane::Dataplane;

/// Timeouts and intervals. Defaults suit a real cloud; tests shorten them.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Timeout of a call between actors that should answer at once (placement, network allocation).
    pub call: Duration,
    /// Timeout of a compute agent's build or destroy of one instance.
    pub build: Duration,
    /// How often compute agents report in.
    pub report_interval: Duration,
    /// A host that has not reported for this long counts as down.
    pub service_down_after: Duration,
    /// How often a conductor looks in the store for operations it does not know of.
    pub sweep_interval: Duration,
    /// How long issued tokens are valid.
    pub token_ttl: Duration,
    /// How long a deallocated fixed IP waits for its DHCP release before it is reclaimed anyway.
    pub fixed_ip_reclaim_after: Duration,
    /// How often the network side re-applies the dataplane state the store implies.
    pub reconcile_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            call: Duration::from_secs(10),
            build: Duration::from_secs(120),
            report_interval: Duration::from_secs(10),
            service_down_after: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(15),
            token_ttl: Duration::from_secs(12 * 3600),
            fixed_ip_reclaim_after: Duration::from_secs(600),
            reconcile_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
pub struct ApplyLocks {
    pub segments: tokio::sync::Mutex<()>,
    pub nat: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
pub struct Ctx {
    pub store: Store,
    pub ns: Namespace,
    pub timing: Timing,
    /// The dataplane driver; only the network manager and the VLAN supervisors use it.
    pub dataplane: Arc<dyn Dataplane>,
    /// Held from reading a desired state to applying it, so concurrent requests cannot apply an older read
    /// over a newer one (a DHCP host entry or a floating address would vanish until the next reconcile).
    pub dataplane_apply: Arc<ApplyLocks>,
    /// Give every new instance a floating IP from the default pool (nova's `auto_assign_floating_ip`); it is
    /// released with the instance and not counted against the project's quota.
    pub auto_assign_floating_ip: bool,
}
