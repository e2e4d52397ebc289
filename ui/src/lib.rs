//! hush-ui: the egui window. It owns only view state: each frame it reads the core's
//! [`Snapshot`](hush_core::Snapshot) and sends [`Command`](hush_core::Command)s.
#![warn(missing_docs, unreachable_pub)]

mod accounts;
mod app;
mod background;
mod calls;
mod camera;
mod chat;
mod contacts;
mod sas;
mod screenshot;
mod settings;
mod video;
mod widgets;

pub use app::HushApp;

use hush_core::Phone;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the window could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No display, no GL, or the window system refused.
    #[error("cannot open the window: {0}")]
    Window(String),
    /// `--screenshot` could not write its file.
    #[error("screenshot failed: {0}")]
    Screenshot(String),
}

/// How to run the window.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Save the first settled frame as PNG here and close.
    pub screenshot: Option<PathBuf>,
    /// The page to open on: home, accounts, contacts, calls, settings, chat:ADDRESS.
    pub page: Option<String>,
    /// Start the echo test with a test tone (a screenshot waits until it is secure).
    pub echo_test: bool,
    /// The same with video (a screenshot waits until the far end's pictures show).
    pub video_test: bool,
    /// The same sharing the screen (`$DISPLAY`).
    pub share_test: bool,
}

/// Opens the main window and runs until it is closed.
pub fn run(phone: Arc<Phone>, options: Options) -> Result<(), UiError> {
    // Screenshots show the smallest size the window is designed for.
    let size = if options.screenshot.is_some() {
        [1280.0, 800.0]
    } else {
        [1024.0, 700.0]
    };
    let native = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Hushphone")
            .with_app_id("hushphone")
            .with_inner_size(size)
            .with_min_inner_size([640.0, 420.0]),
        ..Default::default()
    };
    let outcome: screenshot::Outcome = Arc::default();
    let job = options
        .screenshot
        .clone()
        .map(|p| screenshot::ScreenshotJob::new(p, outcome.clone()));
    eframe::run_native(
        "Hushphone",
        native,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            phone.set_waker(Arc::new(move || ctx.request_repaint()));
            let mut app = HushApp::new(phone);
            if let Some(p) = &options.page {
                app.open_page(p);
            }
            let video = options.video_test || options.share_test;
            if options.echo_test || video {
                app = app.with_audio(hush_core::command::MediaChoice {
                    source: hush_core::command::SourceSpec::Tone(440.0),
                    sink: hush_core::command::SinkSpec::Null,
                    video: None,
                });
                if options.share_test {
                    app.start_share_test();
                } else if options.video_test {
                    app.start_video_test();
                } else {
                    app.start_echo_test();
                }
            }
            Ok(Box::new(app::Window {
                app,
                screenshot: job,
                wait_secure: options.echo_test || video,
                wait_video: video,
                started: std::time::Instant::now(),
            }))
        }),
    )
    .map_err(|e| UiError::Window(e.to_string()))?;
    let result = outcome.lock().ok().and_then(|mut o| o.take());
    match result {
        Some(Err(e)) => Err(UiError::Screenshot(e)),
        _ => Ok(()),
    }
}
