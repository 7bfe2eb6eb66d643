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
    /// How failed logins are slowed down and locked out.
    pub login: LoginPolicy,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            call: Duration::from_secs(10),
            build: Duration::from_secs(120),
            report_interval: Duration::from_secs(10),
            // Nova's `service_down_time`: six reports, so that an unchanged report may skip its write while
            // two later ones could still come (`hosts::report_write`).
            service_down_after: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(15),
            token_ttl: Duration::from_secs(12 * 3600),
            fixed_ip_reclaim_after: Duration::from_secs(600),
            reconcile_interval: Duration::from_secs(30),
            login: LoginPolicy::default(),
        }
    }
}

/// How failed logins are answered.
#[derive(Clone, Debug)]
pub struct LoginPolicy {
    /// Failed logins in a row one user may make before each further attempt must wait.
    pub free_failures_per_user: u32,
    /// Failed logins in a row after which the user is locked (Keystone's `lockout_failure_attempts`).
    pub lockout_failure_attempts: u32,
    /// How long a locked user stays locked, whatever password is given (Keystone's `lockout_duration`).
    pub lockout_duration: Duration,
    /// Failed logins one source address may make before each further attempt must wait.
    pub free_failures_per_source: u32,
    /// The first wait beyond the free failures; each further failure doubles it.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// A user or source with no failure for this long starts afresh.
    pub forget_after: Duration,
    /// The most users and sources tracked at once.
    pub max_tracked: usize,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        LoginPolicy {
            free_failures_per_user: 3,
            lockout_failure_attempts: 10,
            lockout_duration: Duration::from_secs(300),
            free_failures_per_source: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(900),
            max_tracked: 100_000,
        }
    }
}
