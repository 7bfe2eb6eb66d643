//! Talking to the Linux kernel for the `linux` dataplane and the `netns` virt driver: network namespaces,
//! netlink requests ([`netlink`]), nftables batches ([`nft`]; security groups in [`firewall`]) and the helper processes (dnsmasq, udhcpc,
//! httpd) they run ([`process`]).

pub mod firewall;
pub mod netlink;
pub mod nft;
pub mod process;

use std::path::PathBuf;

/// What went wrong while changing the kernel, with what nimbus was trying to do.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {name}: {detail}")]
    Namespace { name: String, detail: String },
    #[error("{0}")]
    Unsupported(String),
}

impl KernelError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelError {
        let what = what.into();
        move |source| KernelError::Io { what, source }
    }

    pub fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
        let what = what.into();
        move |source| KernelError::Netlink { what, source }
    }
}

/// Runs `work` on a new OS thread inside the namespace `netns` (nimbus's own when `None`) and awaits its
/// result. Namespaces are per thread, so nothing else of nimbus moves.
pub async fn in_netns<T, F>(netns: Option<&str>, work: F) -> Result<T, KernelError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, KernelError> + Send + 'static,
{
    let netns = netns.map(str::to_owned);
    let (done, result) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new().name("netns".into()).spawn(move || {
        let entered = match &netns {
            Some(name) => std::fs::File::open(netns_path(name))
                .map_err(|e| KernelError::Namespace { name: name.clone(), detail: e.to_string() })
                .and_then(|file| {
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| KernelError::Namespace { name: name.clone(), detail: format!("setns: {e}") })
                }),
            None => Ok(()),
        };
        let _ = done.send(entered.and_then(|()| work()));
    });
    thread.map_err(KernelError::io("start a thread for a network namespace"))?;
    result.await.map_err(|_| KernelError::Unsupported("a network namespace thread ended without an answer".into()))?
}

/// An HTTP/1.0 GET of `/` on `to` from inside `netns`: the response body. For reachability checks of
/// instances (tests, `nimbus bench netns`).
pub async fn http_get(netns: Option<&str>, to: std::net::SocketAddr) -> Result<String, KernelError> {
    use std::io::{Read, Write};
    in_netns(netns, move || {
        let fail = |e: std::io::Error| KernelError::Io { what: format!("GET http://{to}/"), source: e };
        let mut stream =
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_millis(200)).map_err(fail)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).map_err(fail)?;
        write!(stream, "GET / HTTP/1.0\r\nHost: {}\r\n\r\n", to.ip()).map_err(fail)?;
        let mut response = String::new();
        stream.read_to_string(&mut response).map_err(fail)?;
        Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_string()).unwrap_or_default())
    })
    .await
}

/// Replaces `path` with `content` in one step (a reader sees the old file or the new one).
pub(crate) fn write_atomically(path: &std::path::Path, content: &[u8]) -> Result<(), KernelError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(KernelError::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(KernelError::io(format!("replace {}", path.display())))
}

/// A script other programs run (dnsmasq's lease script, udhcpc's).
pub(crate) fn write_executable(path: &std::path::Path, content: &str) -> Result<(), KernelError> {
    use std::os::unix::fs::PermissionsExt;
    write_atomically(path, content.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(KernelError::io(format!("chmod {}", path.display())))
}

/// Where named network namespaces live (`ip netns add` creates them there).
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// The tools a real dataplane or netns instances need, checked at start so a missing one is reported at once
/// and by name, not as an obscure failure at the first boot.
pub fn check_prerequisites(tools: &[&str]) -> Result<(), KernelError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(KernelError::Unsupported(
            "the linux dataplane and the netns virt driver change the kernel's networking and need root \
             (run nimbus as root, or use the default sim dataplane and fake virt driver)"
                .into(),
        ));
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|tool| process::find_tool(tool).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(KernelError::Unsupported(format!(
        "missing tools: {} (on Debian/Ubuntu: apt-get install iproute2 nftables dnsmasq-base busybox)",
        missing.join(", ")
    )))
}

/// What a test does when this machine lacks what it needs: under CI (`CI=true`), where `.ci/run` installs the
/// packages and runs as root, it fails; elsewhere it prints why it skips.
pub fn skip_unless_ci(test: &str, why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run {test}, but {why}");
    eprintln!("SKIPPED ({test}): {why}");
}

/// A network namespace for the drivers' own tests, removed with everything running in it when dropped, and
/// with the namespaces the test named after it (`<name>-…`, an instance driver's), even when the test failed.
#[cfg(test)]
pub(crate) struct TestNetns {
    pub name: String,
}

#[cfg(test)]
impl TestNetns {
    /// A fresh namespace, or `None` where the kernel tools or root are missing ([`skip_unless_ci`]).
    pub fn new(tag: &str, tools: &[&str]) -> Option<TestNetns> {
        if let Err(why) = check_prerequisites(tools) {
            skip_unless_ci(&format!("the {tag} test"), &why.to_string());
            return None;
        }
        let name = format!("nimbus-unit-{}-{tag}", std::process::id());
        let ok = std::process::Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Some(TestNetns { name })
    }

    pub fn ip(&self, args: &[&str]) {
        let ok =
            std::process::Command::new("ip").args(["-n", &self.name]).args(args).status().is_ok_and(|s| s.success());
        assert!(ok, "ip -n {} {args:?}", self.name);
    }
}

#[cfg(test)]
impl Drop for TestNetns {
    fn drop(&mut self) {
        for netns in process::namespaces_with_prefix(&format!("{}-", self.name)) {
            process::remove_namespace_now(&netns);
        }
        process::remove_namespace_now(&self.name);
    }
}
