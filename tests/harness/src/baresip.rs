//! baresip 1.0 as a plain SIP peer (Debian's build has no ZRTP): auto-answers and echoes
//! what it hears (aubridge), PCMU/PCMA only.

use crate::process::{ServerProcess, free_port};
use crate::{HarnessError, Result, io};
use std::process::Command;
use std::time::Duration;

/// A running baresip.
pub struct Baresip {
    _dir: tempfile::TempDir,
    port: u16,
    process: ServerProcess,
}

impl Baresip {
    /// Starts baresip listening on a free loopback port, answering every call.
    pub fn start() -> Result<Baresip> {
        // baresip also listens on TCP and TLS (the port after the UDP one): a port found
        // free for UDP can be taken there, so a start that finds it taken is tried again
        // on other ports (bounded).
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once() {
                Err(HarnessError::NotReady { log, .. })
                    if attempt < 4 && log.contains("Address already in use") => {}
                other => return other,
            }
        }
    }

    fn start_once() -> Result<Baresip> {
        let dir = tempfile::Builder::new()
            .prefix("baresip-")
            .tempdir()
            .map_err(io("tempdir"))?;
        let port = free_port();
        let rtp = free_port();
        // On the loopback interface, so that its SDP names the address its media really
        // comes from (otherwise it advertises the host's first interface).
        let config = format!(
            "poll_method\t\tepoll\nsip_listen\t\t127.0.0.1:{port}\nnet_interface\t\t127.0.0.1\n\
             audio_player\t\taubridge,nil\n\
             audio_source\t\taubridge,nil\naudio_alert\t\taubridge,nil\nrtp_ports\t\t{rtp}-{}\n\
             module_path\t\t/usr/lib/baresip/modules\nmodule\t\t\tg711.so\nmodule\t\t\taubridge.so\n\
             module_tmp\t\taccount.so\nmodule_app\t\tmenu.so\n",
            rtp + 20
        );
        std::fs::write(dir.path().join("config"), config).map_err(io("write baresip config"))?;
        std::fs::write(
            dir.path().join("accounts"),
            format!("<sip:bob@127.0.0.1:{port}>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n"),
        )
        .map_err(io("write baresip accounts"))?;
        let mut cmd = Command::new("baresip");
        cmd.arg("-f").arg(dir.path()).env("HOME", dir.path());
        let mut process = ServerProcess::spawn("baresip", cmd, &dir.path().join("baresip.log"))?;
        let log = dir.path().join("baresip.log");
        process.wait_ready(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("baresip is ready"))
        })?;
        Ok(Baresip {
            _dir: dir,
            port,
            process,
        })
    }

    /// Its address: `bob@127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("bob@127.0.0.1:{}", self.port)
    }

    /// Its output.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}
