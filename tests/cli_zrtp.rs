//! The CLI's view of ZRTP keys against real linphonec peers: `sas-verified` outside a
//! call shows the key it is about and marks only that one, and when another linphonec
//! (a fresh ZID, as a relay in the middle or a new device would have) calls from the
//! verified address, the security line says `state=new-key`. Each step is its own
//! process, so the keys also go through the vault between runs.

use hush_harness::{Linphonec, ZrtpSuites};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BOB: &str = "bob@127.0.0.1";

fn hushphone(profile: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hushphone"));
    c.arg("--profile").arg(profile).arg("--json");
    c
}

fn records(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// Runs `sas-verified` with `args`; returns (success, records, stderr).
fn sas_verified(profile: &Path, args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = hushphone(profile)
        .arg("--stdin")
        .arg("sas-verified")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hushphone");
    (
        out.status.success(),
        records(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh linphonec (a new ZID) calls `hushphone answer`; returns hushphone's lines.
fn linphonec_calls(profile: &Path) -> Vec<Value> {
    let port = hush_harness::free_port();
    let mut child = hushphone(profile)
        .args([
            "answer",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--auto",
            "--tone",
            "440",
            "--duration",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("answer");
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let listening = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("listening line");
    assert_eq!(listening["type"], "listening");
    let mut bob = Linphonec::start("bob", false, ZrtpSuites::default()).expect("linphonec");
    bob.send(&format!("call sip:hushphone@127.0.0.1:{port}"))
        .expect("call");
    bob.sas(Duration::from_secs(15)).expect("linphonec's SAS");
    let status = child.wait().expect("answer exits after the call");
    let lines: Vec<Value> = rx.try_iter().collect();
    assert!(status.success(), "{lines:?}");
    lines
}

fn security(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|r| r["type"] == "security" && r["sas"].is_string())
        .unwrap_or_else(|| panic!("no security line with a code: {lines:?}"))
}

#[test]
fn a_verified_address_calling_with_another_key_is_reported_as_a_new_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("profile");

    let first = linphonec_calls(&profile);
    assert_eq!(security(&first)["state"], "secure", "{first:?}");

    // Outside a call: the key is listed first; without --yes nothing changes.
    let (ok, lines, err) = sas_verified(&profile, &[BOB]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let listed: Vec<&Value> = lines.iter().filter(|r| r["type"] == "peer-key").collect();
    assert_eq!(listed.len(), 1, "{lines:?}");
    assert_eq!(listed[0]["last_seen"], true);
    assert_eq!(listed[0]["verified"], false);
    let first_key = listed[0]["key"].as_str().expect("key").to_owned();
    let (ok, lines, err) = sas_verified(&profile, &[BOB, "--yes"]);
    assert!(ok, "{err}");
    let marked = lines
        .iter()
        .find(|r| r["type"] == "sas")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(marked["key"], first_key.as_str());
    assert_eq!(marked["verified"], true);

    // Another linphonec, same address, a key never verified.
    let second = linphonec_calls(&profile);
    let line = security(&second);
    assert_eq!(line["state"], "new-key", "{second:?}");
    assert_eq!(
        line["warning"],
        "new key for a verified contact: compare the code aloud"
    );
    let (ok, lines, err) = sas_verified(&profile, &[BOB, "--key", "00112233 44556677 8899aabb"]);
    assert!(!ok && err.contains("never presented the key"), "{err}");
    let keys: Vec<(String, bool, bool)> = lines
        .iter()
        .filter(|r| r["type"] == "peer-key")
        .map(|r| {
            (
                r["key"].as_str().unwrap_or_default().to_owned(),
                r["verified"] == true,
                r["last_seen"] == true,
            )
        })
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].2 && !keys[0].1 && keys[0].0 != first_key,
        "{keys:?}"
    );
    assert_eq!(keys[1], (first_key, true, false));
}
