//! Netlink requests (rtnetlink) run in a chosen network namespace, and the idempotent link and address
//! operations the drivers are made of.
//!
//! A netlink socket belongs to the namespace of the thread that opened it, so each batch of requests runs on
//! its own OS thread in the namespace ([`super::in_netns`]) with a current-thread runtime.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVlan, LinkVxlan, RouteMessageBuilder};

use super::KernelError;

const ENODEV: i32 = -19;
const EEXIST: i32 = -17;
const EADDRNOTAVAIL: i32 = -99;
const EOPNOTSUPP: i32 = -95;

/// Runs `work` with a netlink handle opened in the namespace `netns` (nimbus's own when `None`).
pub async fn in_netns<T, F, Fut>(netns: Option<&str>, work: F) -> Result<T, KernelError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, KernelError>>,
{
    super::in_netns(netns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(KernelError::io("start a netlink runtime"))?;
        runtime.block_on(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(KernelError::io("open a netlink socket"))?;
            tokio::spawn(connection);
            work(handle).await
        })
    })
    .await
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code()),
        _ => None,
    }
}

/// The link named `name`, if there is one.
pub async fn link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, KernelError> {
    match handle.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(KernelError::netlink(format!("look up link {name}"))(e)),
    }
}

pub async fn index(handle: &Handle, name: &str) -> Result<u32, KernelError> {
    link(handle, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| KernelError::Unsupported(format!("link {name} does not exist")))
}

/// Every link of the namespace: name → index.
pub async fn links(handle: &Handle) -> Result<BTreeMap<String, u32>, KernelError> {
    let links: Vec<LinkMessage> =
        handle.link().get().execute().try_collect().await.map_err(KernelError::netlink("list links"))?;
    Ok(links.iter().filter_map(|l| Some((name_of(l)?, l.header.index))).collect())
}

pub fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

pub fn controller_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

async fn add(handle: &Handle, name: &str, message: LinkMessage) -> Result<(), KernelError> {
    match handle.link().add(message).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) if errno(&e) == Some(EOPNOTSUPP) => Err(KernelError::Unsupported(format!(
            "the kernel cannot create {name}: this link type is not supported here (Operation not supported)"
        ))),
        Err(e) => Err(KernelError::netlink(format!("create link {name}"))(e)),
    }
}

/// A bridge named `name`, up. Returns its index. It gets a MAC of its own at creation: a bridge without one
/// takes the lowest MAC of its ports, which changes as ports come and go and breaks its neighbours' ARP
/// caches. Random, not derived from the name: the same network's bridges on other hosts share the segment.
pub async fn ensure_bridge(handle: &Handle, name: &str) -> Result<u32, KernelError> {
    if link(handle, name).await?.is_none() {
        add(handle, name, LinkBridge::new(name).address(random_mac().to_vec()).build()).await?;
    }
    let index = index(handle, name).await?;
    set_up(handle, index, name).await?;
    Ok(index)
}

/// A VXLAN link for segment `vni`, optionally over `dev` with a multicast `group` to reach the other hosts
/// of the segment.
pub async fn ensure_vxlan(
    handle: &Handle,
    name: &str,
    vni: u32,
    dev: Option<u32>,
    group: Option<Ipv4Addr>,
) -> Result<u32, KernelError> {
    if link(handle, name).await?.is_none() {
        let mut builder = LinkVxlan::new(name, vni).port(4789);
        if let Some(dev) = dev {
            builder = builder.dev(dev);
        }
        if let Some(group) = group {
            builder = builder.group(group);
        }
        add(handle, name, builder.build()).await?;
    }
    index(handle, name).await
}

/// An 802.1Q link `name` with id `vlan` on `base`.
pub async fn ensure_vlan(handle: &Handle, name: &str, base: &str, vlan: u16) -> Result<u32, KernelError> {
    if link(handle, name).await?.is_none() {
        let base_index = index(handle, base).await?;
        add(handle, name, LinkVlan::new(name, base_index, vlan).build()).await.map_err(|e| match e {
            KernelError::Unsupported(_) => KernelError::Unsupported(format!(
                "cannot create the 802.1Q link {name} on {base}: this kernel has no VLAN (8021q) support; \
                 use VXLAN segments instead (--segments vxlan)"
            )),
            other => other,
        })?;
    }
    index(handle, name).await
}

/// A veth pair `name` / `peer` in this namespace (left alone if `name` exists).
pub async fn ensure_veth(handle: &Handle, name: &str, peer: &str) -> Result<(), KernelError> {
    if link(handle, name).await?.is_none() {
        add(handle, name, LinkVeth::new(name, peer).build()).await?;
    }
    Ok(())
}

pub async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), KernelError> {
    let message = LinkUnspec::new_with_index(index).up().build();
    handle.link().set(message).execute().await.map_err(KernelError::netlink(format!("bring {name} up")))
}

pub async fn set_down(handle: &Handle, index: u32, name: &str) -> Result<(), KernelError> {
    let message = LinkUnspec::new_with_index(index).down().build();
    handle.link().set(message).execute().await.map_err(KernelError::netlink(format!("take {name} down")))
}

/// Makes `bridge` the controller of the link `port` (unless it already is) and brings the port up.
pub async fn attach(handle: &Handle, port: &str, bridge: u32) -> Result<(), KernelError> {
    let link = link(handle, port).await?.ok_or_else(|| KernelError::Unsupported(format!("link {port} is missing")))?;
    let index = link.header.index;
    if controller_of(&link) != Some(bridge) {
        let message = LinkUnspec::new_with_index(index).controller(bridge).build();
        handle.link().set(message).execute().await.map_err(KernelError::netlink(format!("attach {port}")))?;
    }
    set_up(handle, index, port).await
}

/// Moves link `name` into the namespace open as `netns`.
pub async fn move_to_netns(handle: &Handle, name: &str, netns: &std::fs::File) -> Result<(), KernelError> {
    use std::os::fd::AsRawFd;
    let index = index(handle, name).await?;
    let message = LinkUnspec::new_with_index(index).setns_by_fd(netns.as_raw_fd()).build();
    handle.link().set(message).execute().await.map_err(KernelError::netlink(format!("move {name} to its namespace")))
}

/// Renames link `index` and gives it the MAC `mac`.
pub async fn rename_and_set_mac(handle: &Handle, index: u32, name: &str, mac: [u8; 6]) -> Result<(), KernelError> {
    let message = LinkUnspec::new_with_index(index).name(name.to_string()).address(mac.to_vec()).build();
    handle.link().set(message).execute().await.map_err(KernelError::netlink(format!("rename to {name}")))
}

pub async fn delete_link(handle: &Handle, name: &str) -> Result<(), KernelError> {
    let Some(link) = link(handle, name).await? else { return Ok(()) };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
        Err(e) => Err(KernelError::netlink(format!("delete link {name}"))(e)),
    }
}

/// One IPv4 address of a link.
#[derive(Clone, Debug)]
pub struct Address {
    pub link: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// Its address protocol (`IFA_PROTO`), the mark nimbus puts on addresses it owns.
    pub protocol: Option<u8>,
    pub message: AddressMessage,
}

/// The IPv4 addresses of link `link`, or of every link (one request either way).
pub async fn addresses(handle: &Handle, link: Option<u32>) -> Result<Vec<Address>, KernelError> {
    let mut request = handle.address().get();
    if let Some(link) = link {
        request = request.set_link_index_filter(link);
    }
    let messages: Vec<AddressMessage> =
        request.execute().try_collect().await.map_err(KernelError::netlink("list addresses"))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| {
            let address = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v4)) | AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            })?;
            let protocol = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Protocol(p) => Some(u8::from(*p)),
                _ => None,
            });
            Some(Address { link: m.header.index, address, prefix: m.header.prefix_len, protocol, message: m })
        })
        .collect())
}

/// Adds `address/prefix` to link `index` (nothing if it is there), marked with `protocol` when given so
/// nimbus can later tell its own addresses from the operator's.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    prefix: u8,
    protocol: Option<u8>,
) -> Result<(), KernelError> {
    let mut request = handle.address().add(index, IpAddr::V4(address), prefix);
    if let Some(protocol) = protocol {
        request.message_mut().attributes.push(AddressAttribute::Protocol(AddressProtocol::from(protocol)));
    }
    match request.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(KernelError::netlink(format!("add address {address}/{prefix}"))(e)),
    }
}

pub async fn delete_address(handle: &Handle, message: AddressMessage) -> Result<(), KernelError> {
    match handle.address().del(message).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(()),
        Err(e) => Err(KernelError::netlink("delete an address")(e)),
    }
}

/// A default route via `gateway` (replacing any other default).
pub async fn set_default_route(handle: &Handle, gateway: Ipv4Addr) -> Result<(), KernelError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).build();
    handle.route().add(route).replace().execute().await.map_err(KernelError::netlink(format!("route via {gateway}")))
}

/// Writes a sysctl of the namespace this thread is in (`/proc/sys/net` follows the thread's namespace).
pub fn set_sysctl(path: &str, value: &str) -> Result<(), KernelError> {
    let file = format!("/proc/sys/{}", path.replace('.', "/"));
    std::fs::write(&file, value).map_err(KernelError::io(format!("write {file}")))
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let b: [u8; 5] = rand::random();
    [0x02, b[0], b[1], b[2], b[3], b[4]]
}

/// The MTU of a link.
pub fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// Sets the MTU of link `index`.
pub async fn set_mtu(handle: &Handle, index: u32, mtu: u32) -> Result<(), KernelError> {
    let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
    handle.link().set(message).execute().await.map_err(KernelError::netlink(format!("set MTU {mtu}")))
}

/// `fa:16:3e:…` as bytes.
pub fn parse_mac(mac: &str) -> Result<[u8; 6], KernelError> {
    let bytes: Vec<u8> = mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.try_into().map_err(|_| KernelError::Unsupported(format!("{mac} is not a MAC address")))
}
