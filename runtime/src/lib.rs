//! nimbus-runtime: what every nimbus actor stands on.
//!
//! # Layout
//! - [`supervisor`]: a supervisor actor of our own (ractor has no restart strategies): one_for_one,
//!   one_for_all and rest_for_one, restart intensity within a period with escalation to the parent, and
//!   restart backoff. It keeps each child's start function, so it can respawn a child under its old name.
//! - [`topic`]: where workers listen. A [`Namespace`] scopes actor names and process groups (one cloud per
//!   namespace, so tests can run several in one process); a [`Topic`] is a role (`scheduler`: any member
//!   answers) or a host (`compute.host-0003`: exactly that host). Callers resolve a topic at every call, so a
//!   restarted actor is found under its topic and no stale reference is kept.
//! - [`rpc`]: request/reply where every call has a timeout and a typed [`CallError`], plus [`rpc::then`],
//!   which runs a call off the caller's mailbox and delivers the outcome back to it as a message.
//! - [`introspect`]: the live actor tree for the console (walked through the supervisors), message counts,
//!   and a ring of recent supervision events.
//! - [`wire`]: the serde + bincode encoding of messages that may cross nodes.
//! - [`telemetry`]: tracing setup for binaries.

pub mod introspect;
pub mod rpc;
pub mod supervisor;
pub mod telemetry;
pub mod topic;
pub mod wire;

pub use rpc::CallError;
pub use supervisor::{Backoff, ChildSpec, Intensity, Strategy, Supervisor, SupervisorArgs, SupervisorMsg};
pub use topic::{Namespace, Topic};
pub use wire::Wire;
