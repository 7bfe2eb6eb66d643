//! One dnsmasq per DHCP network: started, reloaded when its hosts change, restarted when its arguments
//! change or it dies, and adopted (with the leases it holds) when nimbus restarts and finds it running.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use nimbus_protocol::failure::chain;
use nimbus_protocol::ids::NetworkId;
use nix::sys::signal::Signal;

use super::Inner;
use super::dnsmasq::{self, DhcpFiles};
use crate::dataplane::{DhcpHost, Segment};
use crate::kernel::{KernelError, process, write_atomically, write_executable};

/// A running DHCP server and what it was started for.
pub(super) struct DhcpServer {
    pub(super) segment: Segment,
    pub(super) server: Ipv4Addr,
    pub(super) pid: u32,
    /// Held so the process is reaped when it ends (`None` for one adopted from a previous run of nimbus);
    /// liveness is read from `/proc`.
    _child: Option<tokio::process::Child>,
}

impl Inner {
    /// Writes the hosts file and makes sure the network's dnsmasq runs with the right arguments: started if
    /// missing, reloaded (SIGHUP) when only the hosts changed, restarted when its arguments did.
    pub(super) async fn ensure_dhcp(
        &self,
        segment: &Segment,
        server: Ipv4Addr,
        hosts: &BTreeSet<DhcpHost>,
    ) -> Result<(), KernelError> {
        let files = DhcpFiles::new(&self.config.state_dir, segment.network);
        std::fs::create_dir_all(&files.dir).map_err(KernelError::io(format!("create {}", files.dir.display())))?;
        let hosts_text = dnsmasq::hosts_file(hosts);
        let hosts_changed = std::fs::read_to_string(files.hosts()).ok().as_deref() != Some(hosts_text.as_str());
        if hosts_changed {
            write_atomically(&files.hosts(), hosts_text.as_bytes())?;
        }
        let args = dnsmasq::args(segment, server, &files);
        let running = {
            let dhcp = self.dhcp.lock().expect("dhcp lock");
            dhcp.get(&segment.network)
                .filter(|s| process::alive(s.pid))
                .map(|s| (s.pid, dnsmasq::args(&s.segment, s.server, &files) == args))
        };
        match running {
            Some((pid, true)) => {
                if hosts_changed {
                    process::signal(pid, Signal::SIGHUP);
                }
                Ok(())
            }
            Some((_, false)) => {
                self.stop_dhcp(segment.network).await;
                self.start_dhcp(segment.clone(), server).await
            }
            None => match adoptable(&files, &args) {
                // A previous run of nimbus left it serving with the same arguments: keep it, and the leases
                // it holds.
                Some(pid) => {
                    tracing::info!(bridge = %segment.bridge, pid, "adopting the running dnsmasq");
                    process::signal(pid, Signal::SIGHUP);
                    let server = DhcpServer { segment: segment.clone(), server, pid, _child: None };
                    self.dhcp.lock().expect("dhcp lock").insert(segment.network, server);
                    Ok(())
                }
                None => self.start_dhcp(segment.clone(), server).await,
            },
        }
    }

    pub(super) async fn start_dhcp(&self, segment: Segment, server: Ipv4Addr) -> Result<(), KernelError> {
        let files = DhcpFiles::new(&self.config.state_dir, segment.network);
        write_executable(&files.script(), &dnsmasq::script(&files))?;
        if !files.hosts().exists() {
            write_atomically(&files.hosts(), b"")?;
        }
        stop_stale(&files).await;
        let args = dnsmasq::args(&segment, server, &files);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log_path = files.dir.join("dnsmasq.log");
        let log =
            std::fs::File::create(&log_path).map_err(KernelError::io(format!("create {}", log_path.display())))?;
        let mut command = process::command_in(self.netns(), "dnsmasq", &args);
        command.stderr(log);
        let child = command.spawn().map_err(KernelError::io("start dnsmasq"))?;
        let pid = child.id().unwrap_or_default();
        // dnsmasq writes its pid file once it is bound; an early exit (a bad address, the port in use) is
        // reported with its own words.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if !process::alive(pid) {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(KernelError::Command {
                    command: format!("dnsmasq for {}", segment.bridge),
                    detail: format!("exited at start: {}", said.trim()),
                });
            }
            if files.pid().exists() || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(bridge = %segment.bridge, pid, "dnsmasq started");
        self.dhcp
            .lock()
            .expect("dhcp lock")
            .insert(segment.network, DhcpServer { segment, server, pid, _child: Some(child) });
        Ok(())
    }

    pub(super) async fn stop_dhcp(&self, network: NetworkId) {
        let server = self.dhcp.lock().expect("dhcp lock").remove(&network);
        if let Some(server) = server {
            process::stop(&[server.pid], Duration::from_secs(1)).await;
        }
        stop_stale(&DhcpFiles::new(&self.config.state_dir, network)).await;
    }

    /// Restarts the DHCP servers that died.
    pub(super) async fn restart_dead_dhcp(&self) {
        let dead: Vec<(Segment, Ipv4Addr)> = {
            let dhcp = self.dhcp.lock().expect("dhcp lock");
            dhcp.values().filter(|s| !process::alive(s.pid)).map(|s| (s.segment.clone(), s.server)).collect()
        };
        for (segment, server) in dead {
            let _serial = self.segments.lock().await;
            tracing::warn!(bridge = %segment.bridge, "dnsmasq died; restarting it");
            if let Err(e) = self.start_dhcp(segment.clone(), server).await {
                tracing::warn!(bridge = %segment.bridge, cause = %chain(&e), "dnsmasq did not restart; retrying");
            }
        }
    }
}

/// The dnsmasq named by the pid file, if it runs with exactly `args`.
fn adoptable(files: &DhcpFiles, args: &[String]) -> Option<u32> {
    let pid = std::fs::read_to_string(files.pid()).ok()?.trim().parse::<u32>().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let running: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let (program, running_args) = running.split_first()?;
    (program.ends_with("dnsmasq") && running_args == args && process::alive(pid)).then_some(pid)
}

/// Stops a dnsmasq a previous run of nimbus left behind (its pid file names it).
async fn stop_stale(files: &DhcpFiles) {
    let pid = std::fs::read_to_string(files.pid()).ok().and_then(|p| p.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        let is_dnsmasq = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("dnsmasq"));
        if is_dnsmasq {
            process::stop(&[pid], Duration::from_secs(1)).await;
        }
    }
    let _ = std::fs::remove_file(files.pid());
}
