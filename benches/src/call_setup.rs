//! Call setup time on loopback, INVITE sent → SRTP secure at the caller, median of 20
//! calls: Hushphone calling Hushphone (two lines of one phone), Hushphone calling
//! linphonec, and linphonec calling linphonec, in the same run.
//!
//! `cargo run --release --manifest-path benches/Cargo.toml --bin call_setup`

mod common;
use common::{median, wait};
use hush_core::command::{MediaChoice, SinkSpec, SourceSpec};
use hush_core::model::EncryptionPolicy;
use hush_core::snapshot::CallState;
use hush_core::{CallSecurity, Command, Event, Phone, Profile, Reply};
use hush_harness::{Linphonec, ZrtpSuites};
use std::time::{Duration, Instant};

const CALLS: usize = 20;

/// One call from the phone to `target`, timed from the command to "secure" at the
/// caller; `None` if the far end refused it first (linphonec still busy with the last
/// call), for the caller to try again.
fn hushphone_to(
    phone: &Phone,
    target: &str,
    hangup_remote: Option<&mut Linphonec>,
) -> Option<Duration> {
    let mut rx = phone.events();
    let start = Instant::now();
    let Ok(Reply::Call(call)) = phone.execute_blocking(Command::PlaceCall {
        account: None,
        target: target.into(),
        audio: MediaChoice::default(),
        policy: None,
    }) else {
        panic!("call")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Some(ev) =
            phone.next_event(&mut rx, deadline.saturating_duration_since(Instant::now()))
        else {
            panic!("no secure call within 20 s")
        };
        match ev {
            Event::CallSecurity {
                call: c,
                security: CallSecurity::Secure { .. },
            } if c == call => break,
            Event::CallState {
                call: c,
                state: CallState::Ended(_),
            } if c == call => return None,
            _ => {}
        }
    }
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
    Some(took)
}

/// Where one Hushphone -> Hushphone call's setup time goes, each step from the one
/// before: INVITE sent -> the callee rings; -> the callee answered (its media runs,
/// 200 sent); -> the caller has the 200 and its media runs; -> the caller is secure.
const STEPS: [&str; 4] = [
    "INVITE -> callee rings",
    "callee media up, 200 sent",
    "200 at caller, media up",
    "ZRTP: caller secure",
];

fn hushphone_steps(phone: &Phone, target: &str) -> [Duration; 4] {
    let mut rx = phone.events();
    let start = Instant::now();
    let Ok(Reply::Call(call)) = phone.execute_blocking(Command::PlaceCall {
        account: None,
        target: target.into(),
        audio: MediaChoice::default(),
        policy: None,
    }) else {
        panic!("call")
    };
    let mut at: [Option<Instant>; 4] = [None; 4];
    let deadline = Instant::now() + Duration::from_secs(20);
    while at[3].is_none() {
        let Some(ev) =
            phone.next_event(&mut rx, deadline.saturating_duration_since(Instant::now()))
        else {
            panic!("timed out")
        };
        let now = Instant::now();
        match ev {
            Event::CallIncoming { call: c, .. } if c != call => {
                at[0].get_or_insert(now);
            }
            Event::CallState {
                call: c,
                state: CallState::Connected,
            } => {
                let i = if c == call { 2 } else { 1 };
                at[i].get_or_insert(now);
            }
            Event::CallSecurity {
                call: c,
                security: CallSecurity::Secure { .. },
            } if c == call => {
                at[3] = Some(now);
            }
            _ => {}
        }
    }
    let _ = phone.execute_blocking(Command::Hangup { call });
    wait(
        phone,
        &mut rx,
        |e| matches!(e, Event::CallState { call: c, state: CallState::Ended(_) } if *c == call),
    );
    let mut steps = [Duration::ZERO; 4];
    let mut last = start;
    for (i, t) in at.into_iter().enumerate() {
        let t = t.unwrap_or(last).max(last);
        steps[i] = t - last;
        last = t;
    }
    steps
}

fn main() {
    let dir = tempfile_dir();
    let phone = Phone::start(Profile::open(&dir.join("profile")).expect("profile")).expect("phone");
    let Ok(Reply::Listening(addr)) = phone.execute_blocking(Command::Listen {
        addr: "127.0.0.1:0".parse().expect("addr"),
        auto_answer: Some(MediaChoice {
            source: SourceSpec::Silence,
            sink: SinkSpec::Null,
            video: None,
        }),
        policy: EncryptionPolicy::Mandatory,
    }) else {
        panic!("listen")
    };
    let ours: Vec<Duration> = (0..CALLS)
        .map(|_| hushphone_to(&phone, &format!("echo@{addr}"), None).expect("echo answers"))
        .collect();
    let steps: Vec<[Duration; 4]> = (0..CALLS)
        .map(|_| hushphone_steps(&phone, &format!("echo@{addr}")))
        .collect();

    let mut bob = Linphonec::start("bob", true, ZrtpSuites::default()).expect("linphonec");
    let target = bob.address();
    let mut to_linphone = Vec::new();
    for _ in 0..CALLS {
        // linphonec may still be ending the last call: try again after a pause.
        let took = (0..5)
            .find_map(|_| {
                let t = hushphone_to(&phone, &target, Some(&mut bob));
                if t.is_none() {
                    std::thread::sleep(Duration::from_millis(300));
                }
                t
            })
            .expect("linphonec answers");
        to_linphone.push(took);
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
    println!(
        "hushphone -> hushphone by step (median of {CALLS} calls each, as the phone's events arrive):"
    );
    for (i, name) in STEPS.iter().enumerate() {
        println!(
            "  {name:28}: {:6.2} ms",
            ms(median(steps.iter().map(|s| s[i]).collect()))
        );
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hush-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
