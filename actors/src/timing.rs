//! `Timing`: the timeouts and intervals of a cloud, in one place so tests can shorten them all.

use std::time::Duration;

/// Timeouts and intervals. Defaults suit a real cloud; tests shorten them.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Timeout of a call between actors that should answer at once (placement, a network apply).
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
