//! What the window tests share: a tone for the microphone, running frames until the
//! window shows something (woken by the core's snapshot), and finding a label.

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use hush_core::Phone;
use hush_core::command::{MediaChoice, SinkSpec, SourceSpec};
use std::time::{Duration, Instant};

/// A 440 Hz tone as the microphone, nothing as the speaker.
pub fn tone() -> MediaChoice {
    MediaChoice {
        source: SourceSpec::Tone(440.0),
        sink: SinkSpec::Null,
        video: None,
    }
}

/// Runs frames until `pred` holds, waiting on the core's snapshot between frames
/// (bounded: 20 s in all).
pub fn until(h: &mut Harness<'_>, phone: &Phone, what: &str, pred: impl Fn(&Harness<'_>) -> bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut rx = phone.watch();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        h.run_ok();
        if pred(h) {
            return;
        }
        assert!(Instant::now() < deadline, "no {what} within 20 s");
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
        });
    }
}

/// Some widget's accessible label contains `label`.
pub fn has(h: &Harness<'_>, label: &str) -> bool {
    h.query_all_by_label_contains(label).next().is_some()
}
