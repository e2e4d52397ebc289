//! A remote OTR buddy built on the real libotr: `peers/otr_peer.c`, compiled on first
//! use with gcc and driven line by line over stdin/stdout. It does no networking; the
//! test carries its messages over a real XMPP server.

use crate::{HarnessError, Result, io};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SOURCE: &str = include_str!("../peers/otr_peer.c");
/// Longest a single command may take (key generation is the slowest, well under this).
const COMMAND_LIMIT: Duration = Duration::from_secs(20);

static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Compiles the peer once per source version; returns the binary.
pub fn build_otr_peer() -> Result<PathBuf> {
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let hash = SOURCE.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let dir = std::env::temp_dir().join("hush-harness");
    std::fs::create_dir_all(&dir).map_err(io("create the harness build directory"))?;
    let bin = dir.join(format!("otr_peer-{hash:016x}"));
    if bin.exists() {
        return Ok(bin);
    }
    let src = dir.join(format!("otr_peer-{hash:016x}-{}.c", std::process::id()));
    std::fs::write(&src, SOURCE).map_err(io("write otr_peer.c"))?;
    let tmp = dir.join(format!("otr_peer-{hash:016x}.{}.tmp", std::process::id()));
    let cflags = pkg_config(&["--cflags", "--libs", "libotr"])?;
    let out = Command::new("gcc")
        .arg("-O2")
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .args(cflags.split_whitespace())
        .arg("-lgcrypt")
        .output()
        .map_err(io("run gcc"))?;
    let _ = std::fs::remove_file(&src);
    if !out.status.success() {
        return Err(HarnessError::Tool(format!(
            "gcc otr_peer.c failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // Atomic: parallel tests may race to build it; each rename installs a whole binary.
    std::fs::rename(&tmp, &bin).map_err(io("install otr_peer"))?;
    Ok(bin)
}

fn pkg_config(args: &[&str]) -> Result<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .output()
        .map_err(io("run pkg-config"))?;
    if !out.status.success() {
        return Err(HarnessError::Tool("pkg-config: libotr not found".into()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Hex of a string's bytes (the peer's wire format for bodies).
pub fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Decodes the peer's hex; invalid pairs become '?'.
pub fn unhex(h: &str) -> String {
    let bytes: Vec<u8> = h
        .as_bytes()
        .chunks(2)
        .map(|c| {
            std::str::from_utf8(c)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .unwrap_or(b'?')
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A running C libotr peer.
pub struct OtrPeer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl OtrPeer {
    /// Starts a peer with a fresh key for `account`.
    pub fn start(account: &str) -> Result<OtrPeer> {
        let bin = build_otr_peer()?;
        let mut cmd = Command::new(bin);
        crate::process::tag(&mut cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io("start otr_peer"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| HarnessError::Tool("otr_peer has no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Tool("otr_peer has no stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = OtrPeer {
            child,
            stdin,
            lines: rx,
        };
        peer.run(&format!("key {account}"))?;
        Ok(peer)
    }

    /// Runs one command; returns the lines it printed before "ok".
    pub fn run(&mut self, command: &str) -> Result<Vec<String>> {
        writeln!(self.stdin, "{command}").map_err(io("write to otr_peer"))?;
        self.stdin.flush().map_err(io("write to otr_peer"))?;
        let mut out = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(COMMAND_LIMIT)
                .map_err(|_| HarnessError::Tool(format!("otr_peer did not answer {command:?}")))?;
            if line == "ok" {
                return Ok(out);
            }
            if let Some(e) = line.strip_prefix("err ") {
                return Err(HarnessError::Tool(format!("otr_peer: {e}")));
            }
            out.push(line);
        }
    }
}

impl Drop for OtrPeer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
