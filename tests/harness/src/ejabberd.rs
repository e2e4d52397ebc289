//! ejabberd 23.01 (Debian 12) on a free loopback port, with a fresh self-signed
//! certificate for `localhost` and `conference.localhost`, in-band registration, MUC,
//! stream management, and an account named `barred` that its access rules keep out.
//! It runs as the `ejabberd` user (ejabberdctl insists), so starting it needs root.

use crate::process::{ServerProcess, free_port, self_signed_cert};
use crate::{HarnessError, Result, io};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CONFIG: &str = include_str!("../configs/ejabberd.yml");
/// ejabberd boots the Erlang VM and Mnesia first: seconds, more on a loaded machine.
const READY: Duration = Duration::from_secs(60);

/// How to start it beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct EjabberdOptions {
    /// Block an address after this many failed logins (mod_fail2ban).
    pub max_auth_failures: Option<u32>,
}

/// A running ejabberd. Stopped (the whole process group) and reaped on drop.
pub struct Ejabberd {
    // Dropped first: the server stops before its directory goes.
    process: ServerProcess,
    dir: tempfile::TempDir,
    port: u16,
    node: String,
    owner: (u32, u32),
}

impl Ejabberd {
    /// Starts ejabberd with the defaults and waits until it accepts connections.
    pub fn start() -> Result<Ejabberd> {
        Self::start_with(EjabberdOptions::default())
    }

    /// Starts ejabberd with `options`.
    pub fn start_with(options: EjabberdOptions) -> Result<Ejabberd> {
        let owner = ejabberd_user()?;
        let dir = tempfile::Builder::new()
            .prefix("ejabberd-")
            .tempdir()
            .map_err(io("tempdir"))?;
        for sub in ["db", "logs"] {
            std::fs::create_dir_all(dir.path().join(sub)).map_err(io("mkdir"))?;
        }
        let port = free_port();
        let extra = match options.max_auth_failures {
            Some(n) => format!("  mod_fail2ban:\n    c2s_max_auth_failures: {n}\n"),
            None => String::new(),
        };
        let config = CONFIG
            .replace("@PORT@", &port.to_string())
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@EXTRA_MODULES@", &extra);
        std::fs::write(dir.path().join("ejabberd.yml"), config)
            .map_err(io("write ejabberd.yml"))?;
        // Erlang's node port and epmd listen on loopback only.
        std::fs::write(
            dir.path().join("ejabberdctl.cfg"),
            "INET_DIST_INTERFACE=127.0.0.1\nERL_EPMD_ADDRESS=127.0.0.1\n",
        )
        .map_err(io("ejabberdctl.cfg"))?;
        std::fs::copy("/etc/ejabberd/inetrc", dir.path().join("inetrc"))
            .map_err(io("copy /etc/ejabberd/inetrc (is ejabberd installed?)"))?;
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        self_signed_cert(&key, &cert, &["localhost", "conference.localhost"])?;
        let mut combined = std::fs::read(&key).map_err(io("read key"))?;
        combined.extend(std::fs::read(&cert).map_err(io("read cert"))?);
        std::fs::write(dir.path().join("combined.pem"), combined).map_err(io("combined.pem"))?;
        chown_tree(dir.path(), owner)?;
        let node = format!("hush{port}@localhost");
        let process = Self::spawn(dir.path(), &node, owner)?;
        let mut server = Ejabberd {
            process,
            dir,
            port,
            node,
            owner,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(dir: &Path, node: &str, owner: (u32, u32)) -> Result<ServerProcess> {
        let mut cmd = ejabberdctl(dir, node, owner);
        cmd.arg("foreground");
        ServerProcess::spawn_group("ejabberd", cmd, &dir.join("console.log"))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let port = self.port;
        self.process.wait_ready(READY, || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
                .is_ok()
        })
    }

    /// The client-to-server port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The XMPP domain served.
    pub fn domain(&self) -> &'static str {
        "localhost"
    }

    /// The server's certificate (PEM), for pinning.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Everything the server stored, to grep for what it saw: its whole database as it
    /// is now, dumped by the running server (Mnesia writes its files behind, so they
    /// could miss the latest). Panics if the server cannot dump it.
    pub fn stored_bytes(&self) -> Vec<u8> {
        use std::os::unix::process::CommandExt;
        let dump = self.dir.path().join("dump.txt");
        let _ = std::fs::remove_file(&dump);
        let mut cmd = ejabberdctl(self.dir.path(), &self.node, self.owner);
        let mut child = cmd
            .arg("dump")
            .arg(&dump)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run ejabberdctl dump");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if std::time::Instant::now() >= deadline {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read(&dump).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()) && !out.is_empty(),
            "ejabberd did not dump its database ({status:?})"
        );
        out
    }

    /// Kills the server hard (a crash); its data survives for [`Ejabberd::restart`].
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops it cleanly (SIGTERM to the whole group); its data survives for a restart.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port with the same data and certificate.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = Self::spawn(self.dir.path(), &self.node, self.owner)?;
        self.wait_ready()
    }

    /// The end of ejabberd's log (it names each login's mechanism and why one failed).
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("logs/ejabberd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut tail = lines[lines.len().saturating_sub(30)..].join("\n");
        tail.push_str("\n-- console --\n");
        tail.push_str(&self.process.log_tail());
        tail
    }

    /// The whole of ejabberd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/ejabberd.log")).unwrap_or_default()
    }

    /// Waits (at most `limit`) until the log holds `line`: ejabberd writes it with a delay,
    /// and the file is the only place it says how a login went.
    pub fn wait_log(&self, line: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.log().contains(line) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ejabberdctl` for this instance's directory and node, run as the ejabberd user; the
/// command (`foreground`, `dump FILE`) is added by the caller.
fn ejabberdctl(dir: &Path, node: &str, (uid, gid): (u32, u32)) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("ejabberdctl");
    cmd.arg("--config-dir")
        .arg(dir)
        .arg("--spool")
        .arg(dir.join("db"))
        .arg("--logs")
        .arg(dir.join("logs"))
        .args(["--node", node])
        .current_dir(dir)
        .env("HOME", dir)
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .uid(uid)
        .gid(gid);
    cmd
}

/// The `ejabberd` system user's uid and gid.
fn ejabberd_user() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io("read /etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.first() == Some(&"ejabberd") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| HarnessError::Tool("no ejabberd user: is ejabberd installed?".into()))
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(format!(
        "chown {} (the tests need root)",
        path.display()
    )))?;
    if path.is_dir() {
        for e in std::fs::read_dir(path).map_err(io("read_dir"))?.flatten() {
            chown_tree(&e.path(), (uid, gid))?;
        }
    }
    Ok(())
}
