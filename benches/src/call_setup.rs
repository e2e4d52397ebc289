//! Call setup time on loopback, INVITE sent → SRTP secure at the caller, median of 20
//! calls: Hushphone calling Hushphone (two lines of one phone), Hushphone calling
//! linphonec, and linphonec calling linphonec, in the same run.
//!
//! `cargo run --release --manifest-path benches/Cargo.toml --bin call_setup`

mod common;
use common::{median, wait};
use hush_core::command::{AudioChoice, SinkSpec, SourceSpec};
use hush_core::model::EncryptionPolicy;
use hush_core::snapshot::CallState;
use hush_core::{CallSecurity, Command, Event, Phone, Profile, Reply};
use hush_harness::{Linphonec, ZrtpSuites};
use std::time::{Duration, Instant};

const CALLS: usize = 20;

fn hushphone_to(phone: &Phone, target: &str, hangup_remote: Option<&mut Linphonec>) -> Duration {
    let mut rx = phone.events();
    let start = Instant::now();
    let Ok(Reply::Call(call)) = phone.execute_blocking(Command::PlaceCall {
        account: None,
        target: target.into(),
        audio: AudioChoice::default(),
        policy: None,
    }) else {
        panic!("call")
    };
    wait(
        phone,
        &mut rx,
        |e| matches!(e, Event::CallSecurity { call: c, security: CallSecurity::Secure { .. } } if *c == call),
    );
    let took = start.elapsed();
    let _ = phone.execute_blocking(Command::Hangup { call });
    wait(
        phone,
        &mut rx,
        |e| matches!(e, Event::CallState { call: c, state: CallState::Ended(_) } if *c == call),
    );
    if let Some(l) = hangup_remote {
        let _ = l.wait_for("ended", Duration::from_secs(5));
    }
    took
}

fn main() {
    let dir = tempfile_dir();
    let phone = Phone::start(Profile::open(&dir.join("profile")).expect("profile")).expect("phone");
    let Ok(Reply::Listening(addr)) = phone.execute_blocking(Command::Listen {
        addr: "127.0.0.1:0".parse().expect("addr"),
        auto_answer: Some(AudioChoice {
            source: SourceSpec::Silence,
            sink: SinkSpec::Null,
        }),
        policy: EncryptionPolicy::Mandatory,
    }) else {
        panic!("listen")
    };
    let ours: Vec<Duration> = (0..CALLS)
        .map(|_| hushphone_to(&phone, &format!("echo@{addr}"), None))
        .collect();

    let mut bob = Linphonec::start("bob", true, ZrtpSuites::default()).expect("linphonec");
    let target = bob.address();
    let mut to_linphone = Vec::new();
    for i in 0..CALLS {
        to_linphone.push(hushphone_to(&phone, &target, Some(&mut bob)));
        // linphonec counts calls; wait for this one's end line before the next.
        let _ = bob.wait_for(&format!("Call {} with", i + 1), Duration::from_secs(5));
    }

    let mut alice = Linphonec::start("alice", false, ZrtpSuites::default()).expect("linphonec");
    let mut theirs = Vec::new();
    for i in 1..=CALLS {
        let start = Instant::now();
        alice.send(&format!("call sip:{target}")).expect("call");
        alice
            .wait_for(
                &format!("Call {i} is fully encrypted"),
                Duration::from_secs(20),
            )
            .expect("secure");
        theirs.push(start.elapsed());
        alice.send("terminate").expect("terminate");
        alice
            .wait_for(
                &format!("Call {i} with sip:{target} ended"),
                Duration::from_secs(10),
            )
            .expect("ended");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "call setup, INVITE sent -> SRTP secure at the caller, median of {CALLS} calls on loopback:"
    );
    println!(
        "  hushphone -> hushphone : {:6.1} ms (X25519)",
        ms(median(ours))
    );
    println!(
        "  hushphone -> linphonec : {:6.1} ms (DH3k, linphonec's default)",
        ms(median(to_linphone))
    );
    println!(
        "  linphonec -> linphonec : {:6.1} ms (DH3k)",
        ms(median(theirs))
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hush-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
