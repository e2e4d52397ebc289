//! CPU of a secured video call: Hushphone sending the 640×480 test pattern at 15 fps
//! (audio too, every stream keyed by ZRTP) to linphonec 5.1, which sends back its own
//! camera, over 20 seconds once the call is secure. Both processes' CPU time (user +
//! system) in the same run, as a share of one core.
//!
//! `cargo run --release --manifest-path benches/Cargo.toml --bin video_call`

mod common;
use common::wait;
use hush_core::command::{MediaChoice, SinkSpec, SourceSpec, VideoChoice, VideoSourceSpec};
use hush_core::snapshot::StreamKind;
use hush_core::{CallSecurity, Command, Event, Phone, Profile, Reply};
use hush_harness::{Linphonec, ZrtpSuites};
use std::time::{Duration, Instant};

const MEASURED: Duration = Duration::from_secs(20);

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bob = Linphonec::start(
        "bob",
        true,
        ZrtpSuites {
            video: true,
            ..ZrtpSuites::default()
        },
    )
    .expect("linphonec");
    let phone = Phone::start(Profile::open(dir.path()).expect("profile")).expect("phone");
    let mut rx = phone.events();
    let Ok(Reply::Call(call)) = phone.execute_blocking(Command::PlaceCall {
        account: None,
        target: bob.address(),
        audio: MediaChoice {
            source: SourceSpec::Tone(440.0),
            sink: SinkSpec::Null,
            video: Some(VideoChoice {
                source: VideoSourceSpec::Pattern,
                record: None,
            }),
        },
        policy: None,
    }) else {
        panic!("call")
    };
    wait(
        &phone,
        &mut rx,
        |e| matches!(e, Event::CallStats { call: c, kind: StreamKind::Video, stats } if *c == call && stats.video.is_some_and(|v| v.frames_decoded > 0)),
    );
    let secure = phone
        .snapshot()
        .calls
        .iter()
        .find(|c| c.id == call)
        .is_some_and(|c| {
            c.streams
                .iter()
                .all(|s| matches!(s.security, CallSecurity::Secure { .. }))
        });
    assert!(secure, "every stream is keyed");
    let ours = std::process::id();
    let theirs = bob.pid().expect("linphonec's pid");
    let (ours0, theirs0, t0) = (cpu_of(ours), cpu_of(theirs), Instant::now());
    let mut last = None;
    let end = Instant::now() + MEASURED;
    while let Some(ev) = phone.next_event(&mut rx, end.saturating_duration_since(Instant::now())) {
        if let Event::CallStats {
            call: c,
            kind: StreamKind::Video,
            stats,
        } = ev
            && c == call
        {
            last = stats.video;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let (ours1, theirs1) = (cpu_of(ours), cpu_of(theirs));
    let _ = phone.execute_blocking(Command::Hangup { call });
    let pct = |a: f64, b: f64| 100.0 * (b - a) / wall;
    let v = last.expect("video figures");
    println!("measured {wall:.1} s of a secured audio + video call");
    println!(
        "hushphone: {:.1} % of a core (sends 640x480 at 15 fps: {} pictures sent; decodes linphonec's {}x{} at {} fps)",
        pct(ours0, ours1),
        v.frames_sent,
        v.width,
        v.height,
        v.fps
    );
    println!(
        "linphonec: {:.1} % of a core (decodes ours, sends its camera)",
        pct(theirs0, theirs1)
    );
}
