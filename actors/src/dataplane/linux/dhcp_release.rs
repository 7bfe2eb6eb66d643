//! Ending a DHCP lease from the network host (what `dhcp_release` from dnsmasq-utils does): a DHCPRELEASE in
//! the client's name, so its address can be handed to the next instance at once. dnsmasq refuses an address
//! still leased to another MAC, even when its hosts file says otherwise.
//!
//! The packet goes from the network host to the server's own address: the kernel delivers it locally but
//! marks it as arriving on the device that owns the address (the bridge), which is where dnsmasq listens.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use crate::kernel::{KernelError, in_netns, netlink::parse_mac};

/// The DHCPRELEASE of `client` (`mac`) to `server`.
pub fn packet(server: Ipv4Addr, mac: [u8; 6], client: Ipv4Addr, xid: u32) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[12..16].copy_from_slice(&client.octets()); // ciaddr
    p[28..34].copy_from_slice(&mac); // chaddr
    p.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
    p.extend_from_slice(&[53, 1, 7]); // DHCPRELEASE
    p.push(54);
    p.push(4);
    p.extend_from_slice(&server.octets()); // server identifier: dnsmasq ignores a release for another server
    p.push(255);
    p
}

pub async fn send(netns: Option<&str>, server: Ipv4Addr, mac: &str, client: Ipv4Addr) -> Result<(), KernelError> {
    let packet = packet(server, parse_mac(mac)?, client, rand::random());
    in_netns(netns, move || {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(KernelError::io("open a DHCP socket"))?;
        socket
            .send_to(&packet, SocketAddrV4::new(server, 67))
            .map_err(KernelError::io(format!("send a DHCP release of {client} to {server}")))?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_names_the_client_and_the_server() {
        let p = packet("10.0.0.1".parse().unwrap(), [0xfa, 0x16, 0x3e, 0, 0, 1], "10.0.0.2".parse().unwrap(), 7);
        assert_eq!(p.len(), 236 + 4 + 3 + 6 + 1);
        assert_eq!(&p[12..16], &[10, 0, 0, 2]);
        assert_eq!(&p[28..34], &[0xfa, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(&p[236..], &[99, 130, 83, 99, 53, 1, 7, 54, 4, 10, 0, 0, 1, 255]);
    }
}
