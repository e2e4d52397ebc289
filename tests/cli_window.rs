//! The window really opens (under Xvfb, with the glow renderer) and renders.

use std::process::Command;
use std::time::Duration;

#[test]
fn window_renders_under_xvfb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let png = dir.path().join("window.png");
    let mut child = Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1280x800x24"])
        .arg(env!("CARGO_BIN_EXE_hushphone"))
        .arg("--profile")
        .arg(dir.path().join("profile"))
        .args(["gui", "--screenshot"])
        .arg(&png)
        .spawn()
        .expect("xvfb-run is installed by scripts/test");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the window did not render and close within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "hushphone gui --screenshot failed: {status:?}"
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at offsets 16 and 20.
    let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    assert_eq!(
        (w, h),
        (1280, 800),
        "screenshots show the 1280x800 design size"
    );
}
