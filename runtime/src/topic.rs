//! Topics: process groups that workers join by role or by host, scoped by a namespace.

use std::fmt;
use std::sync::Arc;

use ractor::{ActorCell, ActorRef, Message, pg};
use rand::seq::IndexedRandom;

/// The namespace of one cloud. Actor names and process groups live in process-global registries; scoping
/// them lets several clouds share a process (the test suite does this). The default namespace adds no prefix,
/// so a production node's actors carry their plain names (`scheduler`, `compute/host-0003`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    pub const DEFAULT: &'static str = "nimbus";

    pub fn new(name: &str) -> Namespace {
        Namespace(Arc::from(name))
    }

    /// The registered name of an actor: `local` itself in the default namespace, `ns:local` otherwise.
    pub fn actor_name(&self, local: &str) -> String {
        if &*self.0 == Self::DEFAULT { local.to_string() } else { format!("{}:{local}", self.0) }
    }

    /// Makes `cell` a member of `topic`. Membership ends by itself when the actor stops.
    pub fn join(&self, topic: &Topic, cell: ActorCell) {
        pg::join_scoped(self.0.to_string(), topic.to_string(), vec![cell]);
    }

    pub fn members(&self, topic: &Topic) -> Vec<ActorCell> {
        pg::get_scoped_members(&self.0.to_string(), &topic.to_string())
    }

    /// One member of `topic`, chosen at random among the live ones, as a typed reference.
    pub fn pick<M: Message>(&self, topic: &Topic) -> Option<ActorRef<M>> {
        self.members(topic).choose(&mut rand::rng()).cloned().map(ActorRef::from)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace::new(Self::DEFAULT)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Namespace({})", self.0)
    }
}

/// Where a message goes: to any member of a role, or to the one worker of a role for a given key (a host for
/// `compute.host-0003`, a project for `conductor.<project id>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Role(&'static str),
    Keyed { role: &'static str, key: String },
}

impl Topic {
    pub fn keyed(role: &'static str, key: impl fmt::Display) -> Topic {
        Topic::Keyed { role, key: key.to_string() }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Role(role) => f.write_str(role),
            Topic::Keyed { role, key } => write!(f, "{role}.{key}"),
        }
    }
}
