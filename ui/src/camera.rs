//! Which camera video calls send: the first camera the system has, unless the user
//! picks another (or the test pattern) in Settings.

use crate::background::{self, Slot};
use eframe::egui;
use hush_core::CameraInfo;
use hush_core::command::VideoSourceSpec;
use hush_core::{Command, Phone, Reply};

/// The camera choice and the cameras last found.
pub(crate) struct CameraChoice {
    /// What video calls send.
    pub(crate) source: VideoSourceSpec,
    found: Slot<Vec<CameraInfo>>,
    /// The cameras of the last look (`None` until it answers).
    cameras: Option<Vec<CameraInfo>>,
    asked: bool,
    /// The user picked in Settings: a later look does not change the choice.
    picked: bool,
    /// The camera the user picked was not found at the last look.
    missing: Option<String>,
}

impl Default for CameraChoice {
    fn default() -> Self {
        CameraChoice {
            source: VideoSourceSpec::Pattern,
            found: Slot::default(),
            cameras: None,
            asked: false,
            picked: false,
            missing: None,
        }
    }
}

impl CameraChoice {
    /// Looks for cameras once, off the window's thread, and takes the answer when it
    /// lands: the first camera, unless the user picked.
    pub(crate) fn update(&mut self, ctx: &egui::Context, phone: &std::sync::Arc<Phone>) {
        if !self.asked {
            self.asked = true;
            let phone = phone.clone();
            background::run(ctx, &self.found, move || {
                match phone.execute_blocking(Command::ListCameras) {
                    Ok(Reply::Cameras(c)) => c,
                    _ => Vec::new(),
                }
            });
        }
        if let Some(cameras) = background::take(&self.found) {
            if !self.picked {
                self.source = cameras.first().map_or(VideoSourceSpec::Pattern, |c| {
                    VideoSourceSpec::Camera(c.path.clone())
                });
            } else if let VideoSourceSpec::Camera(p) = &self.source
                && !cameras.iter().any(|c| &c.path == p)
            {
                // Never another camera the user did not pick: the pattern, and said.
                self.missing = Some(p.display().to_string());
                self.source = VideoSourceSpec::Pattern;
            }
            self.cameras = Some(cameras);
        }
    }

    /// The Settings section: each camera found, or the test pattern.
    pub(crate) fn settings(&mut self, ui: &mut egui::Ui) {
        ui.heading("Video");
        let Some(cameras) = &self.cameras else {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label("Looking for cameras…");
            });
            return;
        };
        let mut source = self.source.clone();
        for c in cameras {
            let label = format!("{} ({})", c.name, c.path.display());
            ui.radio_value(&mut source, VideoSourceSpec::Camera(c.path.clone()), label);
        }
        ui.radio_value(
            &mut source,
            VideoSourceSpec::Pattern,
            "Test pattern (moving colour bars), no camera",
        );
        if cameras.is_empty() {
            ui.label("No camera found: video calls send the test pattern.");
        }
        if let Some(gone) = &self.missing {
            ui.colored_label(
                crate::widgets::RED,
                format!(
                    "The camera you chose ({gone}) is gone: video calls send the test pattern."
                ),
            );
        }
        if source != self.source {
            self.source = source;
            self.picked = true;
            self.missing = None;
        }
        if ui.button("Look for cameras again").clicked() {
            self.asked = false;
            self.cameras = None;
        }
    }
}
