//! nimbus-actors: the actors of a nimbus cloud, the application layer they share, and the pure cores they
//! wrap. What they say to each other is in `nimbus-protocol`.
//!
//! # Layout (from the top floor down)
//! - [`cloud`]: one whole cloud in a process, its supervision tree (`Cloud::start`).
//! - [`gateway`]: the HTTP API (Identity v3, Compute v2.1, Image v2, Network v2.0, admin): authenticates,
//!   authorizes, parses and validates requests, calls the application layer, renders typed views. The only
//!   module that knows HTTP.
//! - The actors: [`conductor`] (one per project, under [`projects`]: the build and delete sagas),
//!   [`scheduler`] (placements), [`network`] (the network manager and the VLAN reconcilers), [`compute`] (one
//!   agent per host, with the virt drivers), [`firewall`] (each filtering host's security-group firewall).
//! - [`app`]: every operation on the cloud's state; the only module that touches the store.
//! - [`dataplane`]: the dataplane contract, the `sim` and `linux` drivers; [`kernel`]: what the real drivers
//!   share to talk to the Linux kernel.
//! - Pure cores: [`instance_state`] (vm_state / task_state / power_state), [`ipam`] (fixed-IP allocation,
//!   lease rules, MACs), [`network_plan`] (carving ranges into networks), [`security_rules`] (security-group
//!   rules as asked, checked and normalized), [`names`]; the scheduler's
//!   placement and claims and the conductor's steps live in their actors' modules.
//! - [`metrics`]: the Prometheus metrics of a cloud; [`timing`]: its timeouts and intervals; [`data_dir`]:
//!   the data directory kept private.

pub mod app;
pub mod cloud;
pub mod compute;
pub mod conductor;
pub mod data_dir;
pub mod dataplane;
pub mod firewall;
pub mod gateway;
pub mod instance_state;
pub mod ipam;
pub mod kernel;
pub mod metrics;
pub mod names;
pub mod network;
pub mod network_plan;
pub mod projects;
pub mod scheduler;
pub mod security_rules;
pub mod timing;
