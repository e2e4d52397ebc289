//! linphonec 5.1 (a real ZRTP client, bzrtp inside) as a peer: its own HOME and rc file,
//! ZRTP mandatory, PCMU, files instead of a sound card, driven through stdin, its
//! output collected line by line.

use crate::process::free_port;
use crate::{HarnessError, Result, io};
use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// ZRTP algorithm overrides (linphone's names, e.g. `MS_ZRTP_KEY_AGREEMENT_X255`), and
/// video.
#[derive(Debug, Clone, Default)]
pub struct ZrtpSuites {
    /// Key agreement.
    pub key_agreement: Option<&'static str>,
    /// SAS rendering.
    pub sas: Option<&'static str>,
    /// Offer and accept video (its camera is a static picture, 572×468 at 15 fps), and
    /// log at debug level to `linphone.log` in its directory.
    pub video: bool,
}

/// A running linphonec.
pub struct Linphonec {
    dir: tempfile::TempDir,
    name: String,
    sip_port: u16,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn rc(name: &str, sip_port: u16, rtp_port: u16, suites: &ZrtpSuites) -> String {
    let video = if suites.video {
        "enabled=1\ncapture=1\ndisplay=0\nautomatically_initiate=1\nautomatically_accept=1\nsize=vga\n"
    } else {
        "enabled=0\ncapture=0\ndisplay=0\nautomatically_initiate=0\nautomatically_accept=0\n"
    };
    let mut zrtp = String::new();
    if let Some(k) = suites.key_agreement {
        zrtp.push_str(&format!("zrtp_key_agreements_suites={k}\n"));
    }
    if let Some(s) = suites.sas {
        zrtp.push_str(&format!("zrtp_sas_suites={s}\n"));
    }
    format!(
        "[sip]\nsip_port={sip_port}\nsip_tcp_port=0\nsip_tls_port=0\nbind_address=127.0.0.1\n\
         contact=\"{name}\" <sip:{name}@127.0.0.1:{sip_port}>\nuse_ipv6=0\nipv6_migration_done=1\n\
         guess_hostname=0\nmedia_encryption=zrtp\nmedia_encryption_mandatory=1\ndefault_proxy=-1\n\
         register_only_when_network_is_up=0\ninc_timeout=30\n{zrtp}\n\
         [rtp]\naudio_rtp_port={rtp_port}\nvideo_rtp_port={}\ntext_rtp_port={}\nbind_address=127.0.0.1\nnortp_timeout=60\n\n\
         [video]\n{video}\n\
         [sound]\nechocancellation=0\n\n\
         [storage]\nuri=null\ncall_logs_db_uri=null\nfriends_db_uri=null\nzrtp_secrets_db_uri=null\n\n\
         [misc]\nenable_basic_to_client_group_chat_room_migration=0\n\n\
         [audio_codec_0]\nmime=PCMU\nrate=8000\nchannels=1\nenabled=1\n\n\
         [audio_codec_1]\nmime=opus\nrate=48000\nchannels=2\nenabled=0\n\n\
         [audio_codec_2]\nmime=speex\nrate=16000\nchannels=1\nenabled=0\n\n\
         [audio_codec_3]\nmime=speex\nrate=8000\nchannels=1\nenabled=0\n\n\
         [audio_codec_4]\nmime=PCMA\nrate=8000\nchannels=1\nenabled=0\n\n\
         [audio_codec_5]\nmime=G729\nrate=8000\nchannels=1\nenabled=0\n",
        rtp_port + 10,
        rtp_port + 20,
    )
}

impl Linphonec {
    /// Starts linphonec as `name`, auto-answering if asked, with files as sound card.
    pub fn start(name: &str, auto_answer: bool, suites: ZrtpSuites) -> Result<Linphonec> {
        let dir = tempfile::Builder::new()
            .prefix("linphonec-")
            .tempdir()
            .map_err(io("tempdir"))?;
        std::fs::create_dir_all(dir.path().join(".local/share/linphone")).map_err(io("mkdir"))?;
        let sip_port = free_port();
        let rtp_port = free_port();
        let rc_path = dir.path().join("linphonerc");
        std::fs::write(&rc_path, rc(name, sip_port, rtp_port, &suites))
            .map_err(io("write linphonerc"))?;
        let mut cmd = Command::new("linphonec");
        crate::process::tag(&mut cmd);
        cmd.arg("-c")
            .arg(&rc_path)
            .env("HOME", dir.path())
            .current_dir(dir.path());
        if auto_answer {
            cmd.arg("-a");
        }
        if suites.video {
            cmd.arg("-V")
                .arg("-d")
                .arg("6")
                .arg("-l")
                .arg(dir.path().join("linphone.log"));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("start linphonec (is linphone-cli installed?)"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Tool("no stdout".into()))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut l = Linphonec {
            dir,
            name: name.into(),
            sip_port,
            child: Some(child),
            stdin,
            lines,
            seen: Vec::new(),
        };
        // Ready once its SIP port is taken (slow with -V and full logging when the
        // other tests in the binary load both cores).
        let deadline = Instant::now() + Duration::from_secs(30);
        while UdpSocket::bind(("127.0.0.1", sip_port)).is_ok() {
            if Instant::now() > deadline {
                return Err(HarnessError::NotReady {
                    server: "linphonec",
                    secs: 30,
                    log: l.seen.join("\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        l.send("soundcard use files")?;
        l.wait_for("Using wav files", Duration::from_secs(5))?;
        Ok(l)
    }

    /// Its SIP port on 127.0.0.1.
    pub fn sip_port(&self) -> u16 {
        self.sip_port
    }

    /// Its address: `name@127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("{}@127.0.0.1:{}", self.name, self.sip_port)
    }

    /// Its working directory (for recordings).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside its directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends a command line.
    pub fn send(&mut self, command: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| HarnessError::Tool("linphonec stdin closed".into()))?;
        writeln!(stdin, "{command}")
            .and_then(|_| stdin.flush())
            .map_err(io("write to linphonec"))
    }

    /// Waits (bounded) for an output line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> Result<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(l.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    return Err(HarnessError::NotReady {
                        server: "linphonec output",
                        secs: limit.as_secs(),
                        log: format!("waiting for {needle:?}; saw:\n{}", self.seen.join("\n")),
                    });
                }
            }
        }
    }

    /// The SAS from "Call N is fully encrypted and auth token is XXXX."
    pub fn sas(&mut self, limit: Duration) -> Result<String> {
        let line = self.wait_for("auth token is", limit)?;
        let token = line
            .rsplit("auth token is ")
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('.');
        Ok(token.to_owned())
    }

    /// Its process id (to read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its debug log so far (with [`ZrtpSuites::video`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file("linphone.log")).unwrap_or_default()
    }

    /// Everything it printed so far.
    pub fn output(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for Linphonec {
    fn drop(&mut self) {
        let _ = self.send("quit");
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
