//! What the benchmark programs share.

use hush_core::{Event, Phone};
use std::time::{Duration, Instant};

/// The middle value of the runs.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Waits (20 s at most) for an event from the phone matching `f`.
pub fn wait(
    phone: &Phone,
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    f: impl Fn(&Event) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(ev) = phone.next_event(rx, deadline.saturating_duration_since(Instant::now())) {
        if std::env::var_os("HUSH_BENCH_TRACE").is_some() {
            eprintln!("{ev:?}");
        }
        if f(&ev) {
            return;
        }
    }
    panic!("timed out");
}
