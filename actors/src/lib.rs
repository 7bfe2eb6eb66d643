//! nimbus-actors: the actors of a nimbus cloud and the pure cores they wrap.
//!
//! # Layout
//! - [`cloud`]: the supervision tree of one cloud (`Cloud::start`), and [`bootstrap`]: the defaults a fresh
//!   cloud gets (admin, flavors, image, network).
//! - [`gateway`]: the HTTP API (Identity v3, Compute v2.1, Image v2): authenticates, authorizes, validates,
//!   persists the intent, and hands work to a project's conductor. The only module that knows HTTP.
//! - [`conductor`]: one per project, under that project's supervisor ([`projects`]): drives the build and
//!   delete sagas (scheduler → compute → network), with retries, timeouts and resume-after-crash.
//! - [`scheduler`]: places instances on hosts; [`scheduler::placement`] is its pure filter/weigher core.
//! - [`network`]: the network manager (MACs and fixed IPs); [`network::ipam`] is its pure allocation core.
//! - [`compute`]: one agent per host, running instances through a [`compute::virt`] driver.
//! - [`instance_state`]: the pure vm_state / task_state / power_state machine; [`instances`]: guarded
//!   transitions of instance records in the store.
//! - [`identity`]: password hashing, tokens and the Keystone-shaped user/project/role model.
//! - [`error`]: [`CloudError`], the one public error, turned into HTTP only by the gateway.

pub mod bootstrap;
pub mod cloud;
pub mod compute;
pub mod conductor;
pub mod context;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod instance_state;
pub mod instances;
pub mod linux;
pub mod names;
pub mod network;
pub mod projects;
pub mod quota;
pub mod scheduler;

pub use cloud::{Cloud, CloudConfig};
pub use context::{Ctx, Timing};
pub use error::CloudError;
