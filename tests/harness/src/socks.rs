//! microsocks, a real SOCKS5 server, on a free loopback port (for the Tor/proxy path).

use crate::process::{ServerProcess, free_port};
use crate::{Result, io};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// A running SOCKS5 proxy.
pub struct Socks5 {
    _dir: tempfile::TempDir,
    port: u16,
    process: ServerProcess,
}

impl Socks5 {
    /// Starts microsocks on 127.0.0.1.
    pub fn start() -> Result<Socks5> {
        let dir = tempfile::Builder::new()
            .prefix("socks-")
            .tempdir()
            .map_err(io("tempdir"))?;
        let port = free_port();
        let mut cmd = Command::new("microsocks");
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        let mut process = ServerProcess::spawn("microsocks", cmd, &dir.path().join("socks.log"))?;
        process.wait_ready(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
                .is_ok()
        })?;
        Ok(Socks5 {
            _dir: dir,
            port,
            process,
        })
    }

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it (to prove traffic needed it).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
