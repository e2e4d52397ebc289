//! A video call from the command line whose pictures come from a camera: the kernel's
//! `vivid` test driver, in a Debian kernel booted under qemu (this machine has no
//! camera and cannot load modules). The test binary boots the machine with itself and
//! `hushphone` inside; inside, one Hushphone answers and records, the other calls with
//! `--video-source /dev/video0`, and the recording must show vivid's colour bars.

use hush_harness::{Vm, shows_vivid_bars};
use hush_media::video::{VideoSource, Y4mReader};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set in the guest: this run is the part inside the machine.
const INSIDE: &str = "HUSH_CLI_CAMERA_INSIDE";
const NAME: &str = "a_call_sends_the_camera_chosen_by_its_device_keyed_and_seen_by_the_peer";

fn hushphone(profile: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hushphone"));
    cmd.args(["--profile", profile, "--json"]);
    cmd
}

fn records(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The part inside the machine.
fn call_inside() {
    let listed = hushphone("/tmp/a")
        .arg("cameras")
        .output()
        .expect("cameras");
    let cameras = records(&listed.stdout);
    assert!(
        cameras
            .iter()
            .any(|r| r["type"] == "camera" && r["device"] == "/dev/video0"),
        "{cameras:?}"
    );
    let recording = "/tmp/from-camera.y4m";
    let mut answer = hushphone("/tmp/b")
        .args([
            "answer",
            "--listen",
            "127.0.0.1:5070",
            "--auto",
            "--tone",
            "440",
        ])
        .args(["--video", "--video-record", recording, "--duration", "8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("answer");
    let mut lines = BufReader::new(answer.stdout.take().expect("stdout")).lines();
    let listening = lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| serde_json::from_str::<Value>(&l).ok())
        .expect("a listening line");
    assert_eq!(listening["type"], "listening", "{listening}");
    std::thread::spawn(move || lines.for_each(drop));
    let call = hushphone("/tmp/a")
        .args(["call", "sip:bob@127.0.0.1:5070", "--tone", "440"])
        .args(["--video", "--video-source", "/dev/video0"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("call");
    let ours = records(&call.stdout);
    println!("caller: {ours:?}");
    assert!(call.status.success(), "{ours:?}");
    assert!(answer.wait().expect("answer ends").success());
    assert!(
        ours.iter()
            .any(|r| r["type"] == "security" && r["sas"].is_string()),
        "the call was not keyed: {ours:?}"
    );
    let file = std::fs::File::open(recording).expect("the peer's recording");
    let mut y4m = Y4mReader::new(file, false).expect("y4m");
    let (mut frames, mut last) = (0, None);
    while let Some(p) = y4m.next_frame().expect("a frame") {
        frames += 1;
        last = Some(p);
    }
    let last = last.expect("pictures from the camera");
    assert_eq!((last.width(), last.height()), (640, 480));
    shows_vivid_bars(last.width(), last.height(), |x, y| last.pixel(x, y), 30)
        .unwrap_or_else(|e| panic!("the peer's picture: {e}"));
    println!("{frames} pictures; CLI-CAMERA-PASSED");
}

#[test]
fn a_call_sends_the_camera_chosen_by_its_device_keyed_and_seen_by_the_peer() {
    if std::env::var_os(INSIDE).is_some() {
        call_inside();
        return;
    }
    let console = Vm::with_camera()
        .map(|vm| vm.cpus(2))
        .and_then(|vm| vm.program(std::path::Path::new(env!("CARGO_BIN_EXE_hushphone"))))
        .and_then(|vm| vm.run_this_test(INSIDE, NAME, Duration::from_secs(300)))
        .unwrap_or_else(|e| panic!("{e}"));
    println!("{console}");
    assert!(console.contains("CLI-CAMERA-PASSED"), "{console}");
}
