//! Lease events: what the DHCP servers' lease scripts append to their event files, tailed from the last
//! offset read and handed to the subscriber (the network manager); and the DHCPRELEASE sent to end a lease.

use std::net::Ipv4Addr;

use nimbus_protocol::ids::NetworkId;
use nimbus_protocol::network::LeaseEvent;
use tokio::sync::mpsc;

use super::Inner;
use super::dnsmasq::{self, DhcpFiles};
use crate::kernel::KernelError;

/// A lease-event file this large, fully read, is started afresh (every renewal appends a line).
const EVENTS_ROTATE_AT: usize = 1 << 20;

impl Inner {
    pub(super) async fn release_lease(
        &self,
        network: NetworkId,
        mac: &str,
        address: Ipv4Addr,
    ) -> Result<(), KernelError> {
        let server = {
            let dhcp = self.dhcp.lock().expect("dhcp lock");
            dhcp.get(&network).map(|s| (s.server, s.segment.bridge.clone()))
        };
        let Some((server, _)) = server else { return Ok(()) };
        super::dhcp_release::send(self.netns(), server, mac, address).await
    }

    /// Reads what the lease scripts appended since the last pass and hands it to the subscriber.
    pub(super) fn forward_lease_events(&self) {
        use std::io::{Read, Seek, SeekFrom};
        let Some(events) = self.events.lock().expect("events lock").clone() else { return };
        let networks: Vec<NetworkId> = self.dhcp.lock().expect("dhcp lock").keys().copied().collect();
        let mut offsets = self.event_offsets.lock().expect("offsets lock");
        for network in networks {
            let files = DhcpFiles::new(&self.config.state_dir, network);
            let Ok(mut file) = std::fs::File::open(files.events()) else { continue };
            let offset = offsets.entry(network).or_insert(0);
            // Only what was appended since the last pass.
            let mut new = Vec::new();
            if file.seek(SeekFrom::Start(*offset)).and_then(|_| file.read_to_end(&mut new)).is_err() {
                continue;
            }
            // Only whole lines: the script may be writing the next one.
            let Some(end) = new.iter().rposition(|b| *b == b'\n').map(|i| i + 1) else { continue };
            for event in dnsmasq::parse_events(network, &String::from_utf8_lossy(&new[..end])) {
                if events.send(event).is_err() {
                    return;
                }
            }
            *offset += end as u64;
            let read = usize::try_from(*offset).unwrap_or(usize::MAX);
            if end == new.len() && read > EVENTS_ROTATE_AT {
                rotate_events(&files, network, &events, read);
                *offset = 0;
            }
        }
    }
}

/// Moves a fully read event file aside so the script starts a new one, and forwards what the script appended
/// in between.
fn rotate_events(files: &DhcpFiles, network: NetworkId, events: &mpsc::UnboundedSender<LeaseEvent>, forwarded: usize) {
    let (current, old) = (files.events(), files.events().with_extension("old"));
    if std::fs::rename(&current, &old).is_err() {
        return;
    }
    if let Ok(text) = std::fs::read(&old) {
        let late = &text[forwarded.min(text.len())..];
        for event in dnsmasq::parse_events(network, &String::from_utf8_lossy(late)) {
            let _ = events.send(event);
        }
    }
    let _ = std::fs::remove_file(&old);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_protocol::network::LeaseAction;

    #[test]
    fn a_rotated_event_file_loses_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let network = NetworkId::generate();
        let files = DhcpFiles::new(dir.path(), network);
        std::fs::create_dir_all(&files.dir).unwrap();
        let first = "add fa:16:3e:00:00:01 10.0.0.2\n";
        std::fs::write(files.events(), format!("{first}del fa:16:3e:00:00:02 10.0.0.3\n")).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        rotate_events(&files, network, &tx, first.len());
        let late = rx.try_recv().expect("the line appended after the last read is forwarded");
        assert_eq!((late.action, late.address), (LeaseAction::Del, "10.0.0.3".parse().unwrap()));
        assert!(rx.try_recv().is_err(), "what was forwarded before is not forwarded again");
        assert!(!files.events().exists() && !files.events().with_extension("old").exists());
    }
}
