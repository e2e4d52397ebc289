//! `--screenshot FILE`: render a few frames, save the window as PNG and close. Used by
//! the headless demo and the documentation screenshots.

use eframe::egui;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Outcome shared between the screenshot callback and the caller of `run`.
pub(crate) type Outcome = Arc<Mutex<Option<Result<(), String>>>>;

pub(crate) struct ScreenshotJob {
    path: PathBuf,
    frames: u32,
    requested: bool,
    outcome: Outcome,
}

/// Frames to draw before capturing, so layout and fonts have settled.
const SETTLE_FRAMES: u32 = 3;

impl ScreenshotJob {
    pub(crate) fn new(path: PathBuf, outcome: Outcome) -> Self {
        ScreenshotJob {
            path,
            frames: 0,
            requested: false,
            outcome,
        }
    }

    /// Called once per frame.
    pub(crate) fn tick(&mut self, ctx: &egui::Context) {
        self.frames += 1;
        if self.outcome.lock().map(|o| o.is_some()).unwrap_or(true) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if self.requested {
            return;
        }
        if self.frames < SETTLE_FRAMES {
            ctx.request_repaint();
            return;
        }
        self.requested = true;
        let path = self.path.clone();
        let outcome = self.outcome.clone();
        let repaint = ctx.clone();
        ctx.request_screenshot(move |image| {
            let result = write_png(&path, &image);
            if let Ok(mut o) = outcome.lock() {
                *o = Some(result);
            }
            repaint.request_repaint();
        });
    }
}

fn write_png(path: &std::path::Path, image: &egui::ColorImage) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let [w, h] = image.size;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = image.pixels.iter().flat_map(|p| p.to_array()).collect();
    writer.write_image_data(&bytes).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}
