//! The persisted data model: one record type per table, each a versioned [`Record`].

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::codec::Record;
use crate::ids::{FlavorId, HostId, ImageId, InstanceId, NetworkId, ProjectId, UserId};

macro_rules! record {
    ($t:ty, $kind:literal, $version:literal) => {
        impl Record for $t {
            const KIND: &'static str = $kind;
            const VERSION: u8 = $version;
        }
    };
}

/// Milliseconds since the Unix epoch: the one time format the store holds.
pub type Millis = u64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub created_at: Millis,
}
record!(Project, "project", 1);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    /// PHC string of a slow hash (argon2id); the password itself is never stored.
    pub password_hash: String,
    pub default_project: Option<ProjectId>,
    pub enabled: bool,
    pub created_at: Millis,
}
record!(User, "user", 1);

/// The roles nimbus knows, as Keystone's default roles: each includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    Reader,
    Member,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Member, Role::Reader];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Reader => "reader",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The roles one user holds on one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub roles: Vec<Role>,
}
record!(Assignment, "assignment", 1);

/// An issued token, stored under the SHA-256 of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub user: UserId,
    pub project: ProjectId,
    pub roles: Vec<Role>,
    pub issued_at: Millis,
    pub expires_at: Millis,
}
record!(Token, "token", 1);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    pub id: FlavorId,
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub ephemeral_gb: u64,
    pub swap_mb: u64,
    pub is_public: bool,
}
record!(Flavor, "flavor", 1);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: ImageId,
    pub name: String,
    pub disk_format: String,
    pub container_format: String,
    pub size_bytes: u64,
    pub min_disk_gb: u64,
    pub min_ram_mb: u64,
    pub owner: Option<ProjectId>,
    pub public: bool,
    pub created_at: Millis,
}
record!(Image, "image", 1);

/// A compute host and its nova-compute service, as registered by its agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: HostId,
    /// Small integer id, as the 2.1 API shows hypervisors and services.
    pub number: u32,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub hypervisor_type: String,
    pub host_ip: Ipv4Addr,
    /// An operator can disable a host so the scheduler avoids it.
    pub enabled: bool,
    /// Last time the agent reported in.
    pub last_seen: Millis,
}
record!(Host, "host", 1);

/// Nova's vm_state: the stable state of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmState {
    Building,
    Active,
    Stopped,
    Error,
}

/// Nova's task_state: what is being done to an instance right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Scheduling,
    Networking,
    Spawning,
    Deleting,
}

/// Nova's power_state codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerState {
    NoState = 0,
    Running = 1,
    Shutdown = 4,
}

/// The flavor as it was when the instance was built (flavors can change later; the instance keeps its size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlavorSnapshot {
    pub id: FlavorId,
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
}

/// One network interface of an instance: its MAC and fixed address on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub network: NetworkId,
    pub network_label: String,
    pub mac: String,
    pub address: Ipv4Addr,
}

/// Why an instance went to ERROR, shown as the server's `fault`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub code: u16,
    pub message: String,
    pub created_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub name: String,
    pub project: ProjectId,
    pub user: UserId,
    pub flavor: FlavorSnapshot,
    pub image: ImageId,
    pub host: Option<HostId>,
    pub vm_state: VmState,
    pub task_state: Option<TaskState>,
    pub power_state: PowerState,
    pub interfaces: Vec<Interface>,
    pub fault: Option<Fault>,
    /// Hosts a build was already tried on (the scheduler's retry filter).
    pub tried_hosts: Vec<HostId>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub launched_at: Option<Millis>,
}
record!(Instance, "instance", 1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkMode {
    Flat,
    FlatDhcp,
    Vlan,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub label: String,
    pub mode: NetworkMode,
    pub cidr: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    pub dns1: Option<Ipv4Addr>,
    /// `None` for a network every project shares.
    pub project: Option<ProjectId>,
    pub created_at: Millis,
}
record!(Network, "network", 1);

/// A fixed address that is in use (allocated to an instance) or held back by the operator. Addresses with no
/// row are free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub address: Ipv4Addr,
    pub instance: Option<InstanceId>,
    pub mac: Option<String>,
    pub allocated: bool,
    pub leased: bool,
    pub reserved: bool,
}
record!(FixedIp, "fixed_ip", 1);

/// A multi-step operation in flight; the saga log. Present from the moment the API accepts the request until
/// the operation has finished or been rolled back, so a restart knows what to resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub instance: InstanceId,
    pub project: ProjectId,
    pub kind: OperationKind,
    pub started_at: Millis,
}
record!(Operation, "operation", 1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    Build,
    Delete,
}
