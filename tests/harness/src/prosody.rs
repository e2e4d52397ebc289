//! Prosody 0.12 on a free loopback port, with a fresh self-signed certificate for
//! `localhost` and `conference.localhost`, in-band registration enabled, and an
//! external component domain (XEP-0114) on a second port for tests that play a server.

use crate::process::{ServerProcess, free_port, self_signed_cert};
use crate::{Result, io};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const CONFIG: &str = include_str!("../configs/prosody.cfg.lua");

/// A running Prosody. Stopped and reaped on drop.
pub struct Prosody {
    // Dropped first: the server stops before its directory goes.
    process: ServerProcess,
    dir: tempfile::TempDir,
    port: u16,
    component_port: u16,
}

impl Prosody {
    /// Starts Prosody and waits (at most 10 s) until it accepts connections.
    pub fn start() -> Result<Prosody> {
        let dir = tempfile::Builder::new()
            .prefix("prosody-")
            .tempdir()
            .map_err(io("tempdir"))?;
        for sub in ["certs", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).map_err(io("mkdir"))?;
        }
        std::fs::write(dir.path().join("prosody.cfg.lua"), CONFIG)
            .map_err(io("write prosody.cfg.lua"))?;
        self_signed_cert(
            &dir.path().join("certs/localhost.key"),
            &dir.path().join("certs/localhost.crt"),
            &["localhost", "conference.localhost"],
        )?;
        let port = free_port();
        let component_port = free_port();
        let process = Self::spawn(dir.path(), port, component_port)?;
        let mut server = Prosody {
            process,
            dir,
            port,
            component_port,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(dir: &Path, port: u16, component_port: u16) -> Result<ServerProcess> {
        let mut cmd = Command::new("prosody");
        cmd.args(["-F", "--config"])
            .arg(dir.join("prosody.cfg.lua"))
            .env("PROSODY_DIR", dir)
            .env("PROSODY_C2S_PORT", port.to_string())
            .env("PROSODY_COMPONENT_PORT", component_port.to_string());
        ServerProcess::spawn("prosody", cmd, &dir.join("prosody.log"))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let ports = [self.port, self.component_port];
        self.process.wait_ready(Duration::from_secs(10), || {
            ports.iter().all(|p| {
                TcpStream::connect_timeout(&([127, 0, 0, 1], *p).into(), Duration::from_millis(200))
                    .is_ok()
            })
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

    /// The external component port (XEP-0114, plain TCP) on 127.0.0.1.
    pub fn component_port(&self) -> u16 {
        self.component_port
    }

    /// The component's domain: whoever connects to the component port may send from
    /// any address at it.
    pub fn component_domain(&self) -> &'static str {
        "hostile.localhost"
    }

    /// The component's shared secret.
    pub fn component_secret(&self) -> &'static str {
        "hostile-component-secret"
    }

    /// Everything the server stored (accounts, rosters, offline messages, archives): tests
    /// grep it to prove what the server did — and did not — see.
    pub fn stored_bytes(&self) -> Vec<u8> {
        fn walk(dir: &Path, out: &mut Vec<u8>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if let Ok(b) = std::fs::read(&p) {
                    out.extend_from_slice(&b);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join("data"), &mut out);
        out
    }

    /// The server's certificate (PEM), for pinning.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("certs/localhost.crt")
    }

    /// Kills the server hard (a crash) — its data directory survives for [`Prosody::restart`].
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts it again on the same port with the same data and certificate.
    pub fn restart(&mut self) -> Result<()> {
        self.process.stop();
        self.process = Self::spawn(self.dir.path(), self.port, self.component_port)?;
        self.wait_ready()
    }

    /// Process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The end of Prosody's log, for diagnosing a failing test.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}
