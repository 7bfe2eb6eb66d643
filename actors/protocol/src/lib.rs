//! nimbus-protocol: what nimbus's actors say to each other.
//!
//! Every message, reply and error type that crosses actors is here, with a typed client per actor: no
//! message is built anywhere but in its client (or by the actor itself, for its own timers). The types an
//! agent is sent are their own, built from the store's records on the controller; this crate knows nothing
//! of the store, so neither do the agents.
//!
//! # Layout
//! - [`ids`]: typed identifiers, shared by the store and the messages.
//! - [`trace`]: the request a piece of work belongs to, carried in every request message.
//! - [`failure`]: errors that travel, as chains of messages, and [`failure::chain`] for the text people read.
//! - [`scheduler`], [`compute`], [`network`], [`conductor`], [`firewall`]: each actor's topic, messages, wire
//!   types, errors and client.

pub mod compute;
pub mod conductor;
pub mod failure;
pub mod firewall;
pub mod ids;
pub mod network;
pub mod scheduler;
pub mod trace;
