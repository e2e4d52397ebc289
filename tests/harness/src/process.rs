//! Child-process plumbing shared by the servers: logs to files, readiness polling with a
//! deadline, SIGTERM then SIGKILL on drop, always reaped.

use crate::{HarnessError, Result, io};
use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that is free for both TCP and UDP on 127.0.0.1 right now, and never handed
/// out before in this process: tests run in parallel threads, and a server restarted
/// on its old port (or one that has not bound yet) must not find another test's
/// server there.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        let port = addr.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Marks a process the tests start (and everything it starts): `scripts/leftovers` finds
/// any still alive after the tests by this variable in its environment.
pub const TEST_PROCESS_TAG: &str = "HUSH_TEST_SERVER";

/// Tags `cmd` with [`TEST_PROCESS_TAG`].
pub fn tag(cmd: &mut Command) {
    cmd.env(TEST_PROCESS_TAG, "1");
}

/// A running server process whose output goes to a log file.
pub(crate) struct ServerProcess {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
    /// The child leads its own process group, and the server runs further down it.
    group: bool,
}

impl ServerProcess {
    pub(crate) fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<ServerProcess> {
        tag(&mut cmd);
        let out = File::create(log).map_err(io(format!("create {}", log.display())))?;
        let err = out.try_clone().map_err(io("clone log handle"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(io(format!("start {name} (is it installed?)")))?;
        Ok(ServerProcess {
            name,
            child: Some(child),
            log: log.to_path_buf(),
            group: false,
        })
    }

    /// Like [`ServerProcess::spawn`], for a start script whose server is a grandchild
    /// (ejabberdctl → erl → beam): the child gets its own process group, and stopping
    /// signals the whole group.
    pub(crate) fn spawn_group(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
    ) -> Result<ServerProcess> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut p = Self::spawn(name, cmd, log)?;
        p.group = true;
        Ok(p)
    }

    fn signal(&self, pid: u32, signal: rustix::process::Signal) {
        let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
            return;
        };
        let _ = if self.group {
            rustix::process::kill_process_group(pid, signal)
        } else {
            rustix::process::kill_process(pid, signal)
        };
    }

    /// Whether anything of the server is still running.
    fn alive(&self, child: &mut Child) -> bool {
        let child_running = !matches!(child.try_wait(), Ok(Some(_)));
        if !self.group {
            return child_running;
        }
        let group_running = rustix::process::Pid::from_raw(child.id() as i32)
            .is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok());
        child_running || group_running
    }

    /// The last lines of the server's output, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Polls `ready` every 25 ms until it returns true, the process dies, or `limit` passes.
    pub(crate) fn wait_ready(
        &mut self,
        limit: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if ready() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    server: self.name,
                    secs: limit.as_secs(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Process id, e.g. to kill the server hard in a reconnect test.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then SIGKILL after a grace period; always reaps.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.signal(child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(if self.group { 8 } else { 3 });
        while Instant::now() < deadline {
            if !self.alive(&mut child) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(child.id(), rustix::process::Signal::KILL);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL without grace (simulates a crash); reaps.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal(child.id(), rustix::process::Signal::KILL);
            let _ = child.kill();
            let _ = child.wait();
            // The group's other members die of the same signal; wait until they are gone
            // so the port is free for a restart.
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.group && self.alive(&mut child) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a helper tool to completion and turns a failure into a readable error.
pub(crate) fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("run {what}")))?;
    if !out.status.success() {
        return Err(HarnessError::Tool(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A self-signed certificate for `names` (first is the CN), written as key + cert PEM.
pub(crate) fn self_signed_cert(key: &Path, cert: &Path, names: &[&str]) -> Result<()> {
    let san: Vec<String> = names
        .iter()
        .map(|n| {
            if n.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{n}")
            } else {
                format!("DNS:{n}")
            }
        })
        .collect();
    run_tool(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "3650",
            ])
            .arg("-subj")
            .arg(format!("/CN={}", names[0]))
            .arg("-addext")
            .arg(format!("subjectAltName={}", san.join(",")))
            // A server certificate, not a CA: TLS clients that are given it as their one
            // trusted certificate (webpki) refuse a CA presented as a server.
            .arg("-addext")
            .arg("basicConstraints=critical,CA:FALSE")
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert),
        "openssl req",
    )
}
