//! hush-ui: the egui window. It owns only view state: each frame it reads the core's
//! [`Snapshot`](hush_core::Snapshot) and sends [`Command`](hush_core::Command)s.
#![warn(missing_docs, unreachable_pub)]

mod app;

pub use app::HushApp;

use hush_core::Phone;
use std::sync::Arc;

/// Why the window could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No display, no GL, or the window system refused.
    #[error("cannot open the window: {0}")]
    Window(String),
}

/// Opens the main window and runs until it is closed.
pub fn run(phone: Arc<Phone>) -> Result<(), UiError> {
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Hushphone")
            .with_inner_size([1024.0, 700.0])
            .with_min_inner_size([640.0, 420.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Hushphone",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            phone.set_waker(Arc::new(move || ctx.request_repaint()));
            Ok(Box::new(HushApp::new(phone)))
        }),
    )
    .map_err(|e| UiError::Window(e.to_string()))
}
