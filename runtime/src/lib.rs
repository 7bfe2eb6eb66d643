//! nimbus-runtime: what every nimbus actor stands on.
//!
//! # Layout
//! - [`supervisor`]: a supervisor actor of our own (ractor has no restart strategies): one_for_one,
//!   one_for_all and rest_for_one, restart intensity within a period with escalation to the parent, and
//!   restart backoff. It keeps each child's start function, so it can respawn a child under its old name, and
//!   may make children on demand from a key (a template).
//! - [`topic`]: where workers listen. A [`Namespace`] scopes actor names and process groups (one cloud per
//!   namespace, so tests can run several in one process); a [`Topic`] is a role (`scheduler`: any member
//!   answers) or a host (`compute.host-0003`: exactly that host). Callers resolve a topic at every call, so a
//!   restarted actor is found under its topic and no stale reference is kept.
//! - [`rpc`]: request/reply where every call has a timeout and a typed [`CallError`]; callers resolve the
//!   topic at every call. Only the typed clients of `nimbus-protocol` use it.
//! - [`introspect`]: what actors record about themselves (message counts, restarts, reconciler status, a ring
//!   of supervision events); [`tree`]: the live actor tree assembled from it for the console.
//! - [`wire`]: the serde + bincode encoding of messages that may cross nodes.
//! - [`telemetry`]: tracing setup for binaries.

pub mod introspect;
pub mod rpc;
pub mod supervisor;
pub mod telemetry;
pub mod topic;
pub mod tree;
pub mod wire;

pub use rpc::CallError;
pub use supervisor::{Backoff, ChildSpec, Intensity, ReadyCheck, Strategy, Supervisor, SupervisorArgs, SupervisorMsg};
pub use topic::{Namespace, Topic};
pub use wire::Wire;
