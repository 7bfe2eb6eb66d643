//! The application layer: every operation of the cloud on its state, as omicron's nexus `app/` has them.
//! Each function owns its store transactions (reads are snapshots, writes are atomic and durable) and asks
//! the workers that must act on a change through their typed clients. The gateway calls these functions and
//! renders what they return; the actors call them for everything they read or write; nothing else of nimbus
//! touches the store.
//!
//! # Layout
//! - [`identity`]: users, projects, roles, password logins and tokens; [`passwords`]: argon2id hashes;
//!   [`login_guard`]: the bounded hashing pool and the failed-login record; [`quota`]: limits and usage.
//! - [`flavors`], [`images`]: the catalog.
//! - [`servers`]: what the Compute API does to servers; [`instances`]: guarded transitions of instance
//!   records; [`builds`]: the steps a conductor persists; [`specs`]: the wire specs agents are sent.
//! - [`hosts`]: host reports, usage and liveness.
//! - [`networks`], [`fixed_ips`], [`floating_ips`]: networks and their addresses; [`dataplane_state`]: the
//!   kernel state the store implies, for the network side to apply.
//! - [`projects`]: which projects need a conductor or a VLAN reconciler.
//! - [`bootstrap`]: the defaults of a fresh cloud. [`error`]: [`error::CloudError`].

pub mod bootstrap;
pub mod builds;
pub mod dataplane_state;
pub mod error;
pub mod fixed_ips;
pub mod flavors;
pub mod floating_ips;
pub mod hosts;
pub mod identity;
pub mod images;
pub mod instances;
pub mod interfaces;
pub mod key_pairs;
pub mod login_guard;
pub mod metadata;
pub mod networks;
pub mod passwords;
pub mod ports;
pub mod projects;
pub mod quota;
pub mod security_groups;
pub mod servers;
pub mod specs;

use std::sync::Arc;

use nimbus_protocol::conductor::ConductorClient;
use nimbus_protocol::ids::{InstanceId, ProjectId};
use nimbus_protocol::network::NetworkClient;
use nimbus_protocol::trace::Trace;
use nimbus_runtime::Namespace;
use nimbus_storage::{Store, StoreStats};

use crate::app::login_guard::LoginGuard;
use crate::timing::Timing;

/// Lowercase hexadecimal, as digests and token secrets are written.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The application layer of one cloud: its store, and how to reach its workers. Cheap to clone.
#[derive(Clone)]
pub struct App {
    store: Store,
    ns: Namespace,
    timing: Timing,
    /// Give every new instance a floating IP from the default pool (nova's `auto_assign_floating_ip`); it is
    /// released with the instance and not counted against the project's quota.
    auto_assign_floating_ip: bool,
    login_guard: Arc<LoginGuard>,
    /// Where uploaded image data is kept (`<data dir>/images`); `None` keeps none, and uploads are refused.
    images_dir: Option<std::path::PathBuf>,
    /// The domain instances' names are under (nova's `dhcp_domain`): their DHCP servers serve it and the
    /// metadata service names them in it.
    dhcp_domain: String,
}

impl App {
    pub fn new(store: Store, ns: Namespace, timing: Timing, auto_assign_floating_ip: bool) -> App {
        let login_guard = Arc::new(LoginGuard::new(timing.login.clone()));
        let dhcp_domain = crate::names::DEFAULT_DHCP_DOMAIN.to_string();
        App { store, ns, timing, auto_assign_floating_ip, login_guard, images_dir: None, dhcp_domain }
    }

    /// The same application layer, with the instances' names under `domain` (checked by the caller).
    pub fn with_dhcp_domain(self, domain: String) -> App {
        App { dhcp_domain: domain, ..self }
    }

    pub fn dhcp_domain(&self) -> &str {
        &self.dhcp_domain
    }

    /// The same application layer, keeping uploaded image data in `dir`.
    pub fn with_images_dir(self, dir: std::path::PathBuf) -> App {
        App { images_dir: Some(dir), ..self }
    }

    /// The hashing pool and the failed-login record every password check goes through.
    pub fn login_guard(&self) -> &LoginGuard {
        &self.login_guard
    }

    pub fn ns(&self) -> &Namespace {
        &self.ns
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The store, for the unit tests that check what the application layer left in it.
    #[cfg(test)]
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The store's counters (commits, writes), for the metrics and the benchmarks.
    pub fn store_stats(&self) -> StoreStats {
        self.store.stats()
    }

    fn network(&self) -> NetworkClient {
        NetworkClient::new(&self.ns, self.timing.call)
    }

    /// Tells the project's conductor, in the background, that an operation on `instance` was logged: the API
    /// answers without waiting for the conductor (which may be starting or restarting). If the notice is
    /// lost, the operation is not: the conductor's sweep finds it in the store.
    fn notify_conductor(&self, trace: &Trace, project: ProjectId, instance: InstanceId) {
        let client = ConductorClient::new(&self.ns, project, self.timing.call);
        let trace = trace.clone();
        tokio::spawn(async move {
            if let Err(e) = client.kick(&trace, instance).await {
                let cause = nimbus_protocol::failure::chain(&e);
                tracing::warn!(request_id = %trace, %project, %instance, %cause, "could not notify the conductor; its sweep will pick the operation up");
            }
        });
    }
}
