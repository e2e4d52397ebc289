//! Kamailio 5.6 as registrar and proxy on a free loopback port (UDP and TCP, optionally
//! TLS), users alice/alicepw and bob/bobpw.

use crate::process::{ServerProcess, free_port, self_signed_cert};
use crate::{Result, io};
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CONFIG: &str = include_str!("../configs/kamailio.cfg");
const TLS_CONFIG: &str = include_str!("../configs/tls.cfg");

/// A running Kamailio. Stopped and reaped on drop.
pub struct Kamailio {
    // Dropped first: the server stops before its directory goes.
    process: ServerProcess,
    _dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
}

impl Kamailio {
    /// Starts Kamailio with UDP and TCP on one free port.
    pub fn start() -> Result<Kamailio> {
        Self::start_with(false, false)
    }

    /// Starts Kamailio with UDP/TCP and also TLS on a second port.
    pub fn start_with_tls() -> Result<Kamailio> {
        Self::start_with(true, false)
    }

    /// Starts Kamailio challenging with SHA-256 digests (RFC 7616) instead of MD5.
    pub fn start_with_sha256_digest() -> Result<Kamailio> {
        Self::start_with(false, true)
    }

    fn start_with(tls: bool, sha256: bool) -> Result<Kamailio> {
        let dir = tempfile::Builder::new()
            .prefix("kamailio-")
            .tempdir()
            .map_err(io("tempdir"))?;
        let d = dir.path();
        std::fs::write(d.join("kamailio.cfg"), CONFIG).map_err(io("write kamailio.cfg"))?;
        let port = free_port();
        let mut cmd = Command::new("kamailio");
        cmd.arg("-f")
            .arg(d.join("kamailio.cfg"))
            .args(["-DD", "-E", "-Y"])
            .arg(d);
        cmd.args(["-A", &format!("SIP_PORT={port}")]);
        if sha256 {
            cmd.args(["-A", "DIGEST_SHA256"]);
        }
        let mut tls_port = None;
        if tls {
            std::fs::write(d.join("tls.cfg"), TLS_CONFIG).map_err(io("write tls.cfg"))?;
            std::fs::create_dir_all(d.join("certs")).map_err(io("mkdir certs"))?;
            self_signed_cert(
                &d.join("certs/sip.key"),
                &d.join("certs/sip.crt"),
                &["127.0.0.1", "localhost"],
            )?;
            let t = free_port();
            cmd.args(["-A", "WITH_TLS", "-A", &format!("SIPS_PORT={t}")]);
            tls_port = Some(t);
        }
        cmd.current_dir(d);
        // Kamailio forks its workers: the whole group is stopped, so none is left behind.
        let process = ServerProcess::spawn_group("kamailio", cmd, &d.join("kamailio.log"))?;
        let mut server = Kamailio {
            process,
            _dir: dir,
            port,
            tls_port,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let port = self.port;
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(io("bind probe socket"))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(io("set timeout"))?;
        let local = sock.local_addr().map_err(io("local addr"))?;
        let mut seq = 0u32;
        self.process.wait_ready(Duration::from_secs(10), || {
            seq += 1;
            let msg = options_ping(port, local.port(), seq);
            if sock.send_to(msg.as_bytes(), ("127.0.0.1", port)).is_err() {
                return false;
            }
            let mut buf = [0u8; 2048];
            match sock.recv(&mut buf) {
                Ok(n) => buf[..n].starts_with(b"SIP/2.0 200"),
                Err(_) => false,
            }
        })
    }

    /// The UDP/TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, if started with TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The SIP domain users register under.
    pub fn domain(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The end of Kamailio's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Directory holding the config (and TLS material).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

fn options_ping(port: u16, local_port: u16, seq: u32) -> String {
    format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-ready-{seq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag=ready{seq}\r\n\
         To: <sip:127.0.0.1:{port}>\r\n\
         Call-ID: ready-{seq}@127.0.0.1\r\n\
         CSeq: {seq} OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}
