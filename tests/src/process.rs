//! The real `nimbus` binary as a child process, for the tests that stop it with signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `target/<profile>` directory the test binary runs from.
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/it-<hash>
    exe.parent().and_then(Path::parent).expect("the test binary lives in target/<profile>/deps").to_path_buf()
}

/// The `nimbus` binary, built on first use (cargo builds integration tests, not other packages' binaries).
pub fn nimbus_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "nimbus", "--bin", "nimbus"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build for the nimbus binary");
        assert!(status.success(), "cargo build -p nimbus failed");
        let binary = target_profile_dir().join("nimbus");
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// A free loopback port (bound and released; the window for a collision is tiny).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A `nimbus` child process (`up`, or a cluster `node`). Killed (SIGKILL) on drop if still running.
pub struct NimbusProcess {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl NimbusProcess {
    /// Starts `nimbus up` on `data_dir` and waits until its API answers.
    pub fn start(data_dir: &Path, admin_password: &str) -> NimbusProcess {
        let listen = format!("127.0.0.1:{}", free_port());
        let data = data_dir.display().to_string();
        let args: Vec<String> = ["up", "--data-dir", data.as_str(), "--listen", listen.as_str(), "--fake-hosts", "4"]
            .map(String::from)
            .to_vec();
        NimbusProcess::spawn(data_dir, &args, &[("NIMBUS_ADMIN_PASSWORD", admin_password)], &listen)
    }

    /// Starts `nimbus ARGS` with `env`, logging next to `data_dir`, and waits until `ready` (an address)
    /// accepts connections.
    pub fn spawn(data_dir: &Path, args: &[String], env: &[(&str, &str)], ready: &str) -> NimbusProcess {
        let log = data_dir.with_extension(format!("{}.log", ready.replace([':', '.'], "-")));
        let out = std::fs::File::create(&log).expect("a log file");
        let mut command = Command::new(nimbus_binary());
        command.args(args).stdin(Stdio::null()).stdout(out.try_clone().expect("log file handle")).stderr(out);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("starting nimbus");
        let mut process = NimbusProcess { child, url: format!("http://{ready}"), log };
        process.wait_until_serving();
        process
    }

    fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = self.url.trim_start_matches("http://").to_string();
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("nimbus exited with {status} before serving; log:\n{}", self.log_text());
            }
            if std::net::TcpStream::connect(&addr).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "nimbus did not listen within 60 s; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: sending a signal to our own child process, which has not been reaped yet.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(Instant::now() < deadline, "nimbus did not stop within 30 s of SIGTERM; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for NimbusProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
