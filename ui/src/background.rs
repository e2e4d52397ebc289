//! Commands whose answer the window waits for (a server round trip, opening a sound
//! card, reading the ZRTP cache) run off the window's thread; the answer waits in a
//! slot for the next frame, and the window is woken when it lands.

use eframe::egui;
use std::sync::{Arc, Mutex};

/// Where a background job leaves its answer.
pub(crate) type Slot<T> = Arc<Mutex<Option<T>>>;

/// Runs `job` on its own thread, puts its result in `slot` and repaints.
pub(crate) fn run<T: Send + 'static>(
    ctx: &egui::Context,
    slot: &Slot<T>,
    job: impl FnOnce() -> T + Send + 'static,
) {
    let (slot, ctx) = (slot.clone(), ctx.clone());
    std::thread::spawn(move || {
        let out = job();
        if let Ok(mut s) = slot.lock() {
            *s = Some(out);
        }
        ctx.request_repaint();
    });
}

/// The answer a job left, taken out of the slot.
pub(crate) fn take<T>(slot: &Slot<T>) -> Option<T> {
    slot.lock().ok().and_then(|mut s| s.take())
}

/// The answer a job left, left in the slot for later frames.
pub(crate) fn peek<T: Clone>(slot: &Slot<T>) -> Option<T> {
    slot.lock().ok().and_then(|s| s.clone())
}
