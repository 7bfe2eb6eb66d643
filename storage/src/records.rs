//! The persisted data model: one record type per table, each a versioned [`Record`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::codec::Record;
use crate::error::StoreError;
use nimbus_protocol::ids::{
    FlavorId, FloatingIpId, HostId, ImageId, InstanceId, NetworkId, PoolId, PortId, ProjectId, SecurityGroupId,
    SecurityRuleId, UserId,
};

macro_rules! record {
    ($t:ty, $kind:literal, $version:literal) => {
        impl Record for $t {
            const KIND: &'static str = $kind;
            const VERSION: u8 = $version;
        }
    };
}

/// An older version of a record whose newer versions only appended fields with a one-zero-byte empty value
/// (`None`, an empty list or map, an enum's first variant): read as the current one once `missing` zero
/// bytes are added.
fn decode_padded<T: Record>(bytes: &[u8], missing: usize) -> Result<T, StoreError> {
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len() + missing, 0);
    decode_version(T::KIND, T::VERSION, T::VERSION, &padded)
}

/// Milliseconds since the Unix epoch: the one time format the store holds.
pub type Millis = u64;

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// How the project's instances are networked: on shared flat networks, or (VLAN) on a network of its own,
    /// bound to it the first time it needs one.
    pub network_mode: NetworkMode,
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
    /// Tokens are valid only while they carry this number: a password change or a disable raises it, which
    /// revokes every token the user holds at once.
    pub token_epoch: u32,
}

impl Record for User {
    const KIND: &'static str = "user";
    const VERSION: u8 = 2;

    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        /// Version 1 had no token epoch.
        #[derive(Deserialize)]
        struct V1 {
            id: UserId,
            name: String,
            password_hash: String,
            default_project: Option<ProjectId>,
            enabled: bool,
            created_at: Millis,
        }
        let v1: V1 = decode_version(Self::KIND, 1, version, bytes)?;
        Ok(User {
            id: v1.id,
            name: v1.name,
            password_hash: v1.password_hash,
            default_project: v1.default_project,
            enabled: v1.enabled,
            created_at: v1.created_at,
            token_epoch: 0,
        })
    }
}

/// Decodes `bytes` as the older version `expected` of a record, for [`Record::upgrade`].
fn decode_version<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    expected: u8,
    found: u8,
    bytes: &[u8],
) -> Result<T, StoreError> {
    if found != expected {
        return Err(StoreError::UnknownRecordVersion { kind, found });
    }
    let (old, _) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|source| StoreError::Decode { kind, source })?;
    Ok(old)
}

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

/// An issued token, stored under the SHA-256 of its secret. It names whom it stands for, not what they may
/// do: the roles are read from the assignments at every request, so a removed role is gone at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub user: UserId,
    pub project: ProjectId,
    /// The user's `token_epoch` when the token was issued.
    pub user_epoch: u32,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

impl Record for Token {
    const KIND: &'static str = "token";
    const VERSION: u8 = 2;

    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        /// Version 1 carried the roles of its issue and no epoch.
        #[derive(Deserialize)]
        struct V1 {
            user: UserId,
            project: ProjectId,
            _roles: Vec<Role>,
            issued_at: Millis,
            expires_at: Millis,
        }
        let v1: V1 = decode_version(Self::KIND, 1, version, bytes)?;
        Ok(Token {
            user: v1.user,
            project: v1.project,
            user_epoch: 0,
            issued_at: v1.issued_at,
            expires_at: v1.expires_at,
        })
    }
}

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
    pub status: ImageStatus,
    /// The uploaded data, if any (the catalog's own images are records only).
    pub data: Option<ImageData>,
}

impl Record for Image {
    const KIND: &'static str = "image";
    const VERSION: u8 = 2;

    /// Version 2 appended `status` (`Active`, bincode's single 0 byte, as every version-1 image was) and
    /// `data` (`None`, another 0 byte).
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        match version {
            1 => decode_padded(bytes, 2),
            found => Err(StoreError::UnknownRecordVersion { kind: Self::KIND, found }),
        }
    }
}

/// Glance's image status: an image made through the API waits for its data, then is active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageStatus {
    Active,
    Queued,
}

/// Image data kept under the data directory, and what was computed of it as it arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageData {
    /// Its file's name in the images directory (one per upload, so a losing concurrent upload cannot
    /// overwrite the winner's).
    pub file: String,
    /// MD5, as Glance's `checksum`.
    pub md5: String,
    /// SHA-512, as Glance's `os_hash_value`.
    pub sha512: String,
}

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
    /// The cluster node that runs its agent (`local` for an all-in-one cloud) and where that node listens.
    pub node: String,
    pub node_address: Option<String>,
    /// An operator can disable a host so the scheduler avoids it.
    pub enabled: bool,
    /// When the agent's last recorded report came (an unchanged report is not recorded while the record
    /// stays up without it: see `hosts::needs_write`).
    pub last_seen: Millis,
    /// Why the operator disabled it, if they said.
    pub disabled_reason: Option<String>,
    /// The operator declared it down (compute 2.11's force-down): down whatever it reports.
    pub forced_down: bool,
}

impl Record for Host {
    const KIND: &'static str = "host";
    const VERSION: u8 = 2;

    /// Version 2 appended `disabled_reason` and `forced_down` (`None` and `false` are one 0 byte each).
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        match version {
            1 => decode_padded(bytes, 2),
            found => Err(StoreError::UnknownRecordVersion { kind: Self::KIND, found }),
        }
    }
}

/// Nova's vm_state: the stable state of an instance. New states go at the end: a record names its state by
/// position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmState {
    Building,
    Active,
    Stopped,
    Error,
    Paused,
    Suspended,
}

/// Nova's task_state: what is being done to an instance right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Scheduling,
    Networking,
    Spawning,
    Deleting,
    PoweringOff,
    PoweringOn,
    Rebooting,
    RebootingHard,
    Pausing,
    Unpausing,
    Suspending,
    Resuming,
}

/// Nova's power_state codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerState {
    NoState = 0,
    Running = 1,
    Shutdown = 4,
    Paused = 3,
    Suspended = 7,
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
    pub id: PortId,
    pub network: NetworkId,
    pub network_label: String,
    pub mac: String,
    pub address: Ipv4Addr,
    /// Floating addresses NATed to `address`.
    pub floating: Vec<Ipv4Addr>,
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
    /// The key pair it was created with (`key_name`), copied: it stays the instance's key even if the key
    /// pair is deleted or replaced later, as in nova.
    pub key: Option<InstanceKey>,
    /// The security groups of its ports (its project's), in the order they were given.
    pub security_groups: Vec<SecurityGroupId>,
    /// The server's metadata (key-value pairs its users set, shown by the APIs and the metadata service).
    pub metadata: BTreeMap<String, String>,
    /// The interfaces it was created asking for, which its network step gives it.
    pub requested_nics: RequestedNics,
    /// What its users wrote of it (compute 2.19's `description`).
    pub description: Option<String>,
    /// The create request it came from (`r-…`, shared by a multi-create's instances), and its place in it.
    pub reservation_id: String,
    pub launch_index: u32,
    /// Its tags (compute 2.26), in order, each once.
    pub tags: Vec<String>,
    /// The device tags its create gave the requested interfaces (2.32), in the order of `requested_nics`.
    pub requested_tags: Vec<Option<String>>,
    /// The device tag of each interface that has one, by port: what the metadata service tells the guest.
    pub nic_tags: BTreeMap<PortId, String>,
}

/// The interfaces a server create asks for (its `networks`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedNics {
    /// One interface, on the network the project's mode gives it (`"auto"`, or no `networks`).
    #[default]
    Auto,
    /// No interface (`"none"`).
    None,
    /// These, in this order (`eth0`, `eth1`, …).
    These(Vec<NicRequest>),
}

/// One interface a server create asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicRequest {
    /// A new port on the network, with this fixed address if one is given.
    Network { network: NetworkId, address: Option<Ipv4Addr> },
    /// A port the Network API created, which the instance takes (and gives back when it is deleted).
    Port(PortId),
}

impl Record for Instance {
    const KIND: &'static str = "instance";
    const VERSION: u8 = 7;

    /// Each version appended fields whose empty values (`None`, an empty list, map or string, 0, an enum's
    /// first variant) bincode writes as a single 0 byte: an older record is the current one without its
    /// last fields, and reads as it once those bytes are added. Version 2 added `key`, version 3
    /// `security_groups`, version 4 `metadata`, version 5 `requested_nics`, version 6 `description`,
    /// `reservation_id` and `launch_index`, version 7 `tags`, `requested_tags` and `nic_tags`.
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        let missing = match version {
            1 => 10,
            2 => 9,
            3 => 8,
            4 => 7,
            5 => 6,
            6 => 3,
            found => return Err(StoreError::UnknownRecordVersion { kind: Self::KIND, found }),
        };
        decode_padded(bytes, missing)
    }
}

/// An instance's copy of its key pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceKey {
    pub name: String,
    pub public_key: String,
}

/// What a server was created with as `user_data` (decoded), for the metadata service. Kept apart from the
/// instance record, which every step of a build reads and writes, so that up to 64 KiB of it is not copied
/// each time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserData {
    pub bytes: Vec<u8>,
}
record!(UserData, "user_data", 1);

/// A user's SSH key pair, kept as nova keeps them: per user, by name. Only the public half is stored; a key
/// pair nimbus generates hands its private half to the caller once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPair {
    pub user: UserId,
    pub name: String,
    /// The number the API shows as its `id` (from the `key_pair` counter).
    pub number: u32,
    /// In OpenSSH's one-line form (`ssh-ed25519 AAAA… comment`).
    pub public_key: String,
    /// MD5 of the key's wire form in colon-separated hex, as nova shows it.
    pub fingerprint: String,
    pub created_at: Millis,
}
record!(KeyPair, "key_pair", 1);

/// A project's security group: the traffic its members' ports let through (everything else is dropped),
/// statefully: the answers to allowed traffic pass too. Names are unique in a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: SecurityGroupId,
    pub project: ProjectId,
    pub name: String,
    pub description: String,
    pub rules: Vec<SecurityRule>,
    pub created_at: Millis,
    pub updated_at: Millis,
}
record!(SecurityGroup, "security_group", 1);

impl SecurityGroup {
    /// The group every project has, which instances get unless they ask for others.
    pub const DEFAULT_NAME: &'static str = "default";

    /// A project's default group: its members may send anything, and take anything from each other.
    pub fn default_for(project: ProjectId, now: Millis) -> SecurityGroup {
        let id = SecurityGroupId::generate();
        let rule = |direction, remote| SecurityRule {
            id: SecurityRuleId::generate(),
            direction,
            protocol: None,
            port_min: None,
            port_max: None,
            remote,
            description: String::new(),
        };
        SecurityGroup {
            id,
            project,
            name: SecurityGroup::DEFAULT_NAME.into(),
            description: "Default security group".into(),
            rules: vec![rule(Direction::Egress, Remote::Any), rule(Direction::Ingress, Remote::Group(id))],
            created_at: now,
            updated_at: now,
        }
    }
}

/// One kind of traffic a security group lets through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityRule {
    pub id: SecurityRuleId,
    pub direction: Direction,
    /// `None` is any protocol.
    pub protocol: Option<IpProtocol>,
    /// TCP and UDP: the destination port range. ICMP: the type and the code (Neutron's encoding).
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub remote: Remote,
    pub description: String,
}

impl SecurityRule {
    /// Whether two rules let the same traffic through (ids and descriptions aside).
    pub fn same_traffic(&self, other: &SecurityRule) -> bool {
        (self.direction, self.protocol, self.port_min, self.port_max, &self.remote)
            == (other.direction, other.protocol, other.port_min, other.port_max, &other.remote)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Traffic to the member's port.
    Ingress,
    /// Traffic from the member's port.
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpProtocol {
    Tcp,
    Udp,
    Icmp,
}

/// Where the traffic of a rule comes from (ingress) or goes to (egress).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Remote {
    Any,
    Cidr(Ipv4Network),
    /// The fixed addresses of the group's members.
    Group(SecurityGroupId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NetworkMode {
    /// A bridge and addresses written into the instance; no DHCP.
    Flat,
    /// As flat, plus a DHCP server on the bridge handing out the fixed addresses.
    FlatDhcp,
    /// A segment, bridge, subnet and DHCP server per project.
    Vlan,
}

impl NetworkMode {
    pub fn name(self) -> &'static str {
        match self {
            NetworkMode::Flat => "flat",
            NetworkMode::FlatDhcp => "flat_dhcp",
            NetworkMode::Vlan => "vlan",
        }
    }

    pub fn from_name(name: &str) -> Option<NetworkMode> {
        [NetworkMode::Flat, NetworkMode::FlatDhcp, NetworkMode::Vlan].into_iter().find(|m| m.name() == name)
    }

    pub fn has_dhcp(self) -> bool {
        self != NetworkMode::Flat
    }
}

/// The per-project VPN endpoint of a VLAN network (cloudpipe): reachable at the public address and port,
/// forwarded to the private address inside the project's network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpnEndpoint {
    pub public_address: Option<Ipv4Addr>,
    pub public_port: u16,
    pub private_address: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: NetworkId,
    pub label: String,
    pub mode: NetworkMode,
    pub cidr: Ipv4Network,
    pub gateway: Ipv4Addr,
    pub bridge: String,
    /// The host interface the bridge is attached to (the uplink), if any.
    pub bridge_interface: Option<String>,
    /// The segment id of a VLAN-mode network (an 802.1Q VLAN id, or the VNI of a VXLAN segment where the
    /// kernel has no 802.1Q support); `None` in the other modes.
    pub vlan: Option<u16>,
    /// FlatDHCP / VLAN: the DHCP server's address on the bridge.
    pub dhcp_server: Option<Ipv4Addr>,
    pub vpn: Option<VpnEndpoint>,
    /// How many addresses at the top of the range are kept for VPN clients (VLAN mode).
    pub vpn_clients: u32,
    pub dns1: Option<Ipv4Addr>,
    pub dns2: Option<Ipv4Addr>,
    pub multi_host: bool,
    /// Instances get addresses only within these bounds, when set.
    pub allowed_start: Option<Ipv4Addr>,
    pub allowed_end: Option<Ipv4Addr>,
    /// `None` for a network every project of its mode shares (or, in VLAN mode, one not bound yet).
    pub project: Option<ProjectId>,
    pub created_at: Millis,
    /// The name of its subnet in the Network API, if it was given one (else the subnet shows the label).
    pub subnet_name: String,
    /// The MTU its bridge, its segment link and its instances' ports are given (and DHCP hands out); `None`:
    /// the kernel's default for its links.
    pub mtu: Option<u32>,
}

impl Record for Network {
    const KIND: &'static str = "network";
    const VERSION: u8 = 3;

    /// Version 2 appended `subnet_name` (an empty string is one 0 byte), version 3 `mtu`.
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        match version {
            1 => decode_padded(bytes, 2),
            2 => decode_padded(bytes, 1),
            found => Err(StoreError::UnknownRecordVersion { kind: Self::KIND, found }),
        }
    }
}

/// A network the Network API created that has no subnet yet: without a range it has no bridge, segment or
/// addresses. Its subnet's create makes it a [`Network`] with the same id; deleting the subnet makes it bare
/// again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BareNetwork {
    pub id: NetworkId,
    pub label: String,
    /// The project's mode when it was created; its subnet picks Flat or FlatDHCP by `enable_dhcp`.
    pub mode: NetworkMode,
    /// `None` for a network every project of its mode shares (an admin's `shared` network).
    pub project: Option<ProjectId>,
    pub created_at: Millis,
    /// The MTU its create asked for, which its subnet's create gives the network.
    pub mtu: Option<u32>,
}

impl Record for BareNetwork {
    const KIND: &'static str = "bare_network";
    const VERSION: u8 = 2;

    /// Version 2 appended `mtu`.
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        match version {
            1 => decode_padded(bytes, 1),
            found => Err(StoreError::UnknownRecordVersion { kind: Self::KIND, found }),
        }
    }
}

/// A port the Network API created: a fixed address and a MAC held on a network, for an instance to take
/// (`networks: [{"port": …}]`). Its instance, while it has one, keeps the interface; the port outlives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub id: PortId,
    pub name: String,
    pub project: ProjectId,
    pub network: NetworkId,
    pub network_label: String,
    pub mac: String,
    pub address: Ipv4Addr,
    /// The instance that has it now.
    pub device: Option<InstanceId>,
    pub created_at: Millis,
}
record!(Port, "port", 1);

/// A fixed address that is in use (allocated to an instance, or still leased after its release), or held
/// back by the operator. Addresses with no row are free.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub address: Ipv4Addr,
    pub instance: Option<InstanceId>,
    pub mac: Option<String>,
    pub hostname: Option<String>,
    /// Given to an instance.
    pub allocated: bool,
    /// The DHCP server reported a lease for it.
    pub leased: bool,
    /// Held back by the operator.
    pub reserved: bool,
    /// When it was deallocated while still leased (the reclaim timer starts then).
    pub released_at: Option<Millis>,
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
    /// The API request that started it, so the steps a conductor resumes after a restart are still logged
    /// under that request.
    pub request_id: Option<String>,
}

impl Record for Operation {
    const KIND: &'static str = "operation";
    const VERSION: u8 = 2;

    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        /// Version 1 had no request id.
        #[derive(Deserialize)]
        struct V1 {
            instance: InstanceId,
            project: ProjectId,
            kind: OperationKind,
            started_at: Millis,
        }
        let v1: V1 = decode_version(Self::KIND, 1, version, bytes)?;
        Ok(Operation {
            instance: v1.instance,
            project: v1.project,
            kind: v1.kind,
            started_at: v1.started_at,
            request_id: None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    Build,
    Delete,
    /// A power action (stop, start, reboot, pause, suspend and their undoing): which one, the instance's
    /// task_state says.
    Power,
    /// Its host is to give it the interfaces its record has now (`addFixedIp`, `removeFixedIp`).
    Interfaces,
}

/// A pool of floating addresses, created by the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingPool {
    pub id: PoolId,
    pub name: String,
    pub range: Ipv4Network,
    /// The public interface floating addresses are bound to.
    pub interface: String,
    pub created_at: Millis,
}
record!(FloatingPool, "floating_pool", 1);

/// One floating address of a pool: free, allocated to a project, and perhaps associated with an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub id: FloatingIpId,
    pub address: Ipv4Addr,
    pub pool: String,
    pub project: Option<ProjectId>,
    pub instance: Option<InstanceId>,
    pub fixed_address: Option<Ipv4Addr>,
    /// Given to an instance at boot without being asked for; released with it.
    pub auto_assigned: bool,
}
record!(FloatingIp, "floating_ip", 1);

/// A project's limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub instances: Option<u64>,
    pub cores: Option<u64>,
    pub ram_mb: Option<u64>,
    pub floating_ips: Option<u64>,
    pub fixed_ips: Option<u64>,
    /// Per user (nova counts key pairs by user, against the limit of the project they ask in).
    pub key_pairs: Option<u64>,
    pub security_groups: Option<u64>,
    /// Per security group, as nova-network counted them.
    pub security_group_rules: Option<u64>,
}

impl Record for Quota {
    const KIND: &'static str = "quota";
    const VERSION: u8 = 3;

    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        /// Version 1 had only the first five limits, version 2 also the key-pair limit; what they lack gets
        /// nova's default.
        #[derive(Deserialize)]
        struct V1 {
            instances: Option<u64>,
            cores: Option<u64>,
            ram_mb: Option<u64>,
            floating_ips: Option<u64>,
            fixed_ips: Option<u64>,
        }
        #[derive(Deserialize)]
        struct V2 {
            v1: V1,
            key_pairs: Option<u64>,
        }
        let V2 { v1, key_pairs } = match version {
            1 => V2 { v1: decode_version(Self::KIND, 1, version, bytes)?, key_pairs: Quota::DEFAULT.key_pairs },
            _ => decode_version(Self::KIND, 2, version, bytes)?,
        };
        Ok(Quota {
            instances: v1.instances,
            cores: v1.cores,
            ram_mb: v1.ram_mb,
            floating_ips: v1.floating_ips,
            fixed_ips: v1.fixed_ips,
            key_pairs,
            security_groups: Quota::DEFAULT.security_groups,
            security_group_rules: Quota::DEFAULT.security_group_rules,
        })
    }
}

impl Quota {
    /// Nova's defaults.
    pub const DEFAULT: Quota = Quota {
        instances: Some(10),
        cores: Some(20),
        ram_mb: Some(51200),
        floating_ips: Some(10),
        fixed_ips: None,
        key_pairs: Some(100),
        security_groups: Some(10),
        security_group_rules: Some(20),
    };
    pub const UNLIMITED: Quota = Quota {
        instances: None,
        cores: None,
        ram_mb: None,
        floating_ips: None,
        fixed_ips: None,
        key_pairs: None,
        security_groups: None,
        security_group_rules: None,
    };
}

/// What a project uses; changed in the same transaction as the resources it counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub instances: u64,
    pub cores: u64,
    pub ram_mb: u64,
    pub floating_ips: u64,
    pub fixed_ips: u64,
}
record!(Usage, "usage", 1);

/// Where the next fixed-IP search of a network starts: just past the last address handed out, or at the
/// lowest address freed since, so allocation neither rescans the taken addresses nor skips freed ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationCursor {
    pub next: u32,
}
record!(AllocationCursor, "allocation_cursor", 1);

/// What the instances placed on a host use of it, kept in step with every placement and removal in the same
/// transaction, so reading the hosts' usage costs one read per host, not a read of every instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLoad {
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub instances: u64,
}
record!(HostLoad, "host_load", 1);

impl HostLoad {
    /// Counts an instance of `flavor` in.
    pub fn add(&mut self, flavor: &FlavorSnapshot) {
        self.vcpus += u64::from(flavor.vcpus);
        self.ram_mb += flavor.ram_mb;
        self.disk_gb += flavor.disk_gb;
        self.instances += 1;
    }

    /// What the instances use of each host they are placed on, counted from scratch (hosts without any are
    /// left out): the migration's count, and the tests' check of the kept loads.
    pub fn count<'a>(
        instances: impl IntoIterator<Item = &'a Instance>,
    ) -> std::collections::BTreeMap<HostId, HostLoad> {
        let mut loads = std::collections::BTreeMap::<HostId, HostLoad>::new();
        for instance in instances {
            if let Some(host) = &instance.host {
                loads.entry(host.clone()).or_default().add(&instance.flavor);
            }
        }
        loads
    }

    /// Counts an instance of `flavor` out.
    pub fn remove(&mut self, flavor: &FlavorSnapshot) {
        self.vcpus = self.vcpus.saturating_sub(u64::from(flavor.vcpus));
        self.ram_mb = self.ram_mb.saturating_sub(flavor.ram_mb);
        self.disk_gb = self.disk_gb.saturating_sub(flavor.disk_gb);
        self.instances = self.instances.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_record, encode_record};

    #[test]
    fn a_user_and_a_token_of_an_older_nimbus_are_read_with_epoch_zero() {
        #[derive(Serialize, Deserialize)]
        struct UserV1 {
            id: UserId,
            name: String,
            password_hash: String,
            default_project: Option<ProjectId>,
            enabled: bool,
            created_at: Millis,
        }
        impl Record for UserV1 {
            const KIND: &'static str = "user";
            const VERSION: u8 = 1;
        }
        #[derive(Serialize, Deserialize)]
        struct TokenV1 {
            user: UserId,
            project: ProjectId,
            roles: Vec<Role>,
            issued_at: Millis,
            expires_at: Millis,
        }
        impl Record for TokenV1 {
            const KIND: &'static str = "token";
            const VERSION: u8 = 1;
        }
        let (id, project) = (UserId::generate(), ProjectId::generate());
        let old = UserV1 {
            id,
            name: "alice".into(),
            password_hash: "$argon2id$x".into(),
            default_project: Some(project),
            enabled: true,
            created_at: 5,
        };
        let read: User = decode_record(&encode_record(&old).unwrap()).unwrap();
        assert_eq!((read.name.as_str(), read.default_project, read.token_epoch), ("alice", Some(project), 0));
        let old = TokenV1 { user: id, project, roles: vec![Role::Admin], issued_at: 1, expires_at: 9 };
        let read: Token = decode_record(&encode_record(&old).unwrap()).unwrap();
        assert_eq!(read, Token { user: id, project, user_epoch: 0, issued_at: 1, expires_at: 9 });
    }

    #[test]
    fn a_network_of_an_older_nimbus_is_read_with_no_subnet_name() {
        #[derive(Serialize, Deserialize)]
        struct NetworkV1 {
            id: NetworkId,
            label: String,
            mode: NetworkMode,
            cidr: Ipv4Network,
            gateway: Ipv4Addr,
            bridge: String,
            bridge_interface: Option<String>,
            vlan: Option<u16>,
            dhcp_server: Option<Ipv4Addr>,
            vpn: Option<VpnEndpoint>,
            vpn_clients: u32,
            dns1: Option<Ipv4Addr>,
            dns2: Option<Ipv4Addr>,
            multi_host: bool,
            allowed_start: Option<Ipv4Addr>,
            allowed_end: Option<Ipv4Addr>,
            project: Option<ProjectId>,
            created_at: Millis,
        }
        impl Record for NetworkV1 {
            const KIND: &'static str = "network";
            const VERSION: u8 = 1;
        }
        let old = NetworkV1 {
            id: NetworkId::generate(),
            label: "private".into(),
            mode: NetworkMode::FlatDhcp,
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            bridge: "br100".into(),
            bridge_interface: None,
            vlan: None,
            dhcp_server: Some("10.0.0.1".parse().unwrap()),
            vpn: None,
            vpn_clients: 0,
            dns1: Some("192.0.2.53".parse().unwrap()),
            dns2: None,
            multi_host: false,
            allowed_start: None,
            allowed_end: None,
            project: None,
            created_at: 7,
        };
        let read: Network = decode_record(&encode_record(&old).unwrap()).unwrap();
        assert_eq!((read.id, read.label.as_str(), read.dns1, read.created_at), (old.id, "private", old.dns1, 7));
        assert_eq!((read.subnet_name.as_str(), read.mtu), ("", None));
    }

    #[test]
    fn an_instance_and_a_quota_of_an_older_nimbus_are_read_without_a_key() {
        /// Instance version 1: everything up to `launched_at`, no key.
        #[derive(Serialize, Deserialize)]
        struct InstanceV1 {
            id: InstanceId,
            name: String,
            project: ProjectId,
            user: UserId,
            flavor: FlavorSnapshot,
            image: ImageId,
            host: Option<HostId>,
            vm_state: VmState,
            task_state: Option<TaskState>,
            power_state: PowerState,
            interfaces: Vec<Interface>,
            fault: Option<Fault>,
            tried_hosts: Vec<HostId>,
            created_at: Millis,
            updated_at: Millis,
            launched_at: Option<Millis>,
        }
        impl Record for InstanceV1 {
            const KIND: &'static str = "instance";
            const VERSION: u8 = 1;
        }
        let flavor =
            FlavorSnapshot { id: FlavorId("1".into()), name: "m1.tiny".into(), vcpus: 1, ram_mb: 512, disk_gb: 1 };
        let old = InstanceV1 {
            id: InstanceId::generate(),
            name: "vm".into(),
            project: ProjectId::generate(),
            user: UserId::generate(),
            flavor: flavor.clone(),
            image: ImageId::generate(),
            host: Some(HostId::from("host-0001")),
            vm_state: VmState::Active,
            task_state: None,
            power_state: PowerState::Running,
            interfaces: Vec::new(),
            fault: None,
            tried_hosts: vec![HostId::from("host-0002")],
            created_at: 1,
            updated_at: 2,
            launched_at: Some(3),
        };
        let read: Instance = decode_record(&encode_record(&old).unwrap()).unwrap();
        assert_eq!((read.id, read.name.as_str(), read.flavor, read.launched_at), (old.id, "vm", flavor, Some(3)));
        assert_eq!((read.tried_hosts, read.key), (vec![HostId::from("host-0002")], None));
        assert!(read.security_groups.is_empty(), "the schema migration puts it in its default group");

        #[derive(Serialize, Deserialize)]
        struct InstanceV2 {
            v1: InstanceV1,
            key: Option<InstanceKey>,
        }
        impl Record for InstanceV2 {
            const KIND: &'static str = "instance";
            const VERSION: u8 = 2;
        }
        let key = InstanceKey { name: "k".into(), public_key: "ssh-ed25519 AAAA k".into() };
        let v2 = InstanceV2 { v1: old, key: Some(key.clone()) };
        let read: Instance = decode_record(&encode_record(&v2).unwrap()).unwrap();
        assert_eq!((read.name.as_str(), read.launched_at, read.key), ("vm", Some(3), Some(key)));
        assert!(read.security_groups.is_empty() && read.metadata.is_empty());
        assert_eq!(read.requested_nics, RequestedNics::Auto, "an older instance asked for its project's network");

        #[derive(Serialize, Deserialize)]
        struct QuotaV1 {
            instances: Option<u64>,
            cores: Option<u64>,
            ram_mb: Option<u64>,
            floating_ips: Option<u64>,
            fixed_ips: Option<u64>,
        }
        impl Record for QuotaV1 {
            const KIND: &'static str = "quota";
            const VERSION: u8 = 1;
        }
        let old = QuotaV1 { instances: Some(4), cores: None, ram_mb: Some(9), floating_ips: None, fixed_ips: Some(2) };
        let read: Quota = decode_record(&encode_record(&old).unwrap()).unwrap();
        let expected = Quota {
            instances: Some(4),
            cores: None,
            ram_mb: Some(9),
            floating_ips: None,
            fixed_ips: Some(2),
            key_pairs: Some(100),
            security_groups: Some(10),
            security_group_rules: Some(20),
        };
        assert_eq!(read, expected, "an older quota gets nova's defaults for the limits it lacked");

        #[derive(Serialize, Deserialize)]
        struct QuotaV2 {
            v1: QuotaV1,
            key_pairs: Option<u64>,
        }
        impl Record for QuotaV2 {
            const KIND: &'static str = "quota";
            const VERSION: u8 = 2;
        }
        let v1 = QuotaV1 { instances: None, cores: Some(1), ram_mb: None, floating_ips: Some(3), fixed_ips: None };
        let read: Quota = decode_record(&encode_record(&QuotaV2 { v1, key_pairs: Some(7) }).unwrap()).unwrap();
        assert_eq!((read.cores, read.floating_ips, read.key_pairs), (Some(1), Some(3), Some(7)));
        assert_eq!((read.security_groups, read.security_group_rules), (Some(10), Some(20)));
    }

    #[test]
    fn an_operation_logged_by_an_older_nimbus_is_read_without_a_request_id() {
        #[derive(Serialize, Deserialize)]
        struct V1 {
            instance: InstanceId,
            project: ProjectId,
            kind: OperationKind,
            started_at: Millis,
        }
        impl Record for V1 {
            const KIND: &'static str = "operation";
            const VERSION: u8 = 1;
        }
        let (instance, project) = (InstanceId::generate(), ProjectId::generate());
        let old = encode_record(&V1 { instance, project, kind: OperationKind::Delete, started_at: 7 }).unwrap();
        let read: Operation = decode_record(&old).unwrap();
        assert_eq!(read, Operation { instance, project, kind: OperationKind::Delete, started_at: 7, request_id: None });
    }

    #[test]
    fn an_image_of_an_older_nimbus_is_read_as_active_without_data() {
        /// Image version 1: no status, no data.
        #[derive(Serialize, Deserialize)]
        struct V1 {
            id: ImageId,
            name: String,
            disk_format: String,
            container_format: String,
            size_bytes: u64,
            min_disk_gb: u64,
            min_ram_mb: u64,
            owner: Option<ProjectId>,
            public: bool,
            created_at: Millis,
        }
        impl Record for V1 {
            const KIND: &'static str = "image";
            const VERSION: u8 = 1;
        }
        let (id, owner) = (ImageId::generate(), Some(ProjectId::generate()));
        let old = V1 {
            id,
            name: "cirros".into(),
            disk_format: "qcow2".into(),
            container_format: "bare".into(),
            size_bytes: 9,
            min_disk_gb: 1,
            min_ram_mb: 2,
            owner,
            public: true,
            created_at: 7,
        };
        let read: Image = decode_record(&encode_record(&old).unwrap()).unwrap();
        assert_eq!((read.id, read.owner, read.size_bytes, read.created_at), (id, owner, 9, 7));
        assert_eq!((read.status, read.data), (ImageStatus::Active, None));
    }
}
