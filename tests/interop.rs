//! The `hushphone` binary against real peers on loopback: linphonec (ZRTP, bzrtp
//! inside) both ways, with the default and other suites, and baresip (no ZRTP) under the
//! mandatory and the best-effort policy. Tones are checked by pitch and level.

use hush_harness::{Baresip, Linphonec, ZrtpSuites, read_wav_lenient, write_wav};
use hush_media::analysis::{dominant_frequency, rms, tone};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn hushphone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hushphone"))
}

/// Runs the CLI to completion with --json; returns (success, JSON records, stderr).
fn run_json(profile: &Path, args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = hushphone()
        .arg("--profile")
        .arg(profile)
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hushphone");
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    (
        out.status.success(),
        records,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn find<'a>(records: &'a [Value], kind: &str, key: &str, value: &str) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["type"] == kind && r[key] == value)
}

fn tone_file(path: &Path, freq: f64) {
    let samples: Vec<i16> = tone(freq, 8000, 0, 8000 * 20, 8000.0).collect();
    write_wav(path, 8000, &samples).expect("write tone");
}

/// Checks the last second of a recording: pitch and a useful level.
fn assert_hears(path: &Path, freq: f64, who: &str) {
    let (samples, rate) = read_wav_lenient(path).unwrap_or_else(|e| panic!("{who}: {e}"));
    assert!(
        samples.len() > rate as usize * 2,
        "{who}: recording too short ({} samples)",
        samples.len()
    );
    let tail = &samples[samples.len() - rate as usize..];
    assert_eq!(
        dominant_frequency(tail, rate),
        freq,
        "{who} hears {freq} Hz"
    );
    let level = rms(tail);
    assert!((2500.0..9000.0).contains(&level), "{who}: level {level}");
}

fn call_linphonec(suites: ZrtpSuites, expect_algorithms: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bob = Linphonec::start("bob", true, suites).expect("linphonec");
    let bob_tone = bob.file("tone660.wav");
    tone_file(&bob_tone, 660.0);
    let bob_rec = bob.file("heard.wav");
    bob.send(&format!("play {}", bob_tone.display()))
        .expect("play");
    bob.send(&format!("record {}", bob_rec.display()))
        .expect("record");
    let ours = dir.path().join("ours.wav");
    let (ok, records, err) = run_json(
        &dir.path().join("profile"),
        &[
            "call",
            &bob.address(),
            "--tone",
            "440",
            "--record",
            &ours.display().to_string(),
            "--duration",
            "4",
        ],
    );
    assert!(ok, "call failed: {err}\n{records:?}\n{}", bob.output());
    let secure = find(&records, "security", "state", "secure").expect("secure line");
    let our_sas = secure["sas"].as_str().expect("sas").to_owned();
    let their_sas = bob.sas(Duration::from_secs(5)).expect("linphonec's SAS");
    assert_eq!(our_sas, their_sas, "both ends show the same SAS");
    let algorithms = records
        .iter()
        .find(|r| r["type"] == "zrtp")
        .expect("zrtp line")["algorithms"]
        .clone();
    assert!(
        algorithms
            .as_str()
            .is_some_and(|a| a.starts_with(expect_algorithms)),
        "{algorithms}"
    );
    bob.wait_for("ended", Duration::from_secs(5))
        .expect("linphonec sees the hangup");
    assert_hears(&ours, 660.0, "hushphone");
    // linphonec closes its recording when the call ends.
    assert_hears(&bob_rec, 440.0, "linphonec");
}

#[test]
fn hushphone_calls_linphonec() {
    call_linphonec(ZrtpSuites::default(), "DH3k/AES1/S256/HS80/B32");
}

#[test]
fn hushphone_calls_linphonec_with_x25519_and_pgp_words() {
    call_linphonec(
        ZrtpSuites {
            key_agreement: Some("MS_ZRTP_KEY_AGREEMENT_X255"),
            sas: Some("MS_ZRTP_SAS_B256"),
            video: false,
        },
        "X255/",
    );
}

#[test]
fn linphonec_calls_hushphone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = hush_harness::free_port();
    let ours = dir.path().join("ours.wav");
    let mut child = hushphone()
        .arg("--profile")
        .arg(dir.path().join("profile"))
        .args([
            "--json",
            "answer",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--auto",
            "--tone",
            "440",
            "--duration",
            "4",
        ])
        .arg("--record")
        .arg(&ours)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let bob_tone = bob.file("tone660.wav");
    tone_file(&bob_tone, 660.0);
    let bob_rec = bob.file("heard.wav");
    bob.send(&format!("play {}", bob_tone.display()))
        .expect("play");
    bob.send(&format!("record {}", bob_rec.display()))
        .expect("record");
    bob.send(&format!("call sip:hushphone@127.0.0.1:{port}"))
        .expect("call");
    let their_sas = bob.sas(Duration::from_secs(15)).expect("linphonec's SAS");
    let status = child.wait().expect("answer exits after the call");
    let records: Vec<Value> = rx.try_iter().collect();
    assert!(status.success(), "{records:?}");
    let secure = find(&records, "security", "state", "secure").expect("secure line");
    assert_eq!(
        secure["sas"],
        their_sas.as_str(),
        "both ends show the same SAS"
    );
    assert!(
        find(&records, "incoming", "from", "sip:bob@127.0.0.1").is_some(),
        "{records:?}"
    );
    bob.wait_for("ended", Duration::from_secs(5))
        .expect("linphonec sees the hangup");
    assert_hears(&ours, 660.0, "hushphone");
    assert_hears(&bob_rec, 440.0, "linphonec");
}

#[test]
fn baresip_without_zrtp_under_mandatory_encryption_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = Baresip::start().expect("baresip");
    let (ok, records, _) = run_json(
        &dir.path().join("profile"),
        &["call", &peer.address(), "--tone", "440"],
    );
    assert!(!ok, "the call must not succeed: {records:?}");
    let failed = find(&records, "security", "state", "failed").expect("failed line");
    assert_eq!(failed["reason"], "peer does not support ZRTP");
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "call" && r["state"] == "ended")
    );
    // Nothing left unencrypted: every statistics line says zero packets sent.
    let stats: Vec<&Value> = records.iter().filter(|r| r["type"] == "stats").collect();
    assert!(!stats.is_empty(), "{records:?}");
    assert!(
        stats.iter().all(|s| s["sent"] == 0),
        "RTP was sent: {stats:?}"
    );
}

#[test]
fn baresip_without_zrtp_under_best_effort_connects_in_cleartext() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = Baresip::start().expect("baresip");
    let echoed = dir.path().join("echo.wav");
    let (ok, records, err) = run_json(
        &dir.path().join("profile"),
        &[
            "call",
            &peer.address(),
            "--best-effort",
            "--tone",
            "440",
            "--record",
            &echoed.display().to_string(),
            "--duration",
            "3",
        ],
    );
    assert!(ok, "{err}\n{records:?}\n{}", peer.log_tail());
    assert!(
        find(&records, "security", "state", "cleartext").is_some(),
        "{records:?}"
    );
    assert!(find(&records, "security", "state", "secure").is_none());
    // baresip echoes what it hears: our tone comes back.
    assert_hears(&echoed, 440.0, "hushphone (echo from baresip)");
}

#[test]
fn echo_test_needs_no_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, records, err) = run_json(
        &dir.path().join("profile"),
        &["echo-test", "--seconds", "3"],
    );
    assert!(ok, "{err}\n{records:?}");
    let r = records
        .iter()
        .find(|r| r["type"] == "echo-test")
        .expect("result line");
    assert_eq!(r["sas_match"], true);
    assert_eq!(r["echo_ok"], true);
    assert_eq!(r["caller_sas"].as_str().map(str::len), Some(4));
    let latency = r["latency_ms"].as_u64().expect("latency");
    assert!((20..400).contains(&latency), "latency {latency} ms");
}
