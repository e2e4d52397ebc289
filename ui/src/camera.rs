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
}

impl Default for CameraChoice {
    fn default() -> Self {
        CameraChoice {
            source: VideoSourceSpec::Pattern,
            found: Slot::default(),
            cameras: None,
            asked: false,
            picked: false,
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
            let chosen_gone = matches!(&self.source, VideoSourceSpec::Camera(p)
                if !cameras.iter().any(|c| &c.path == p));
            if !self.picked || chosen_gone {
                self.source = cameras.first().map_or(VideoSourceSpec::Pattern, |c| {
                    VideoSourceSpec::Camera(c.path.clone())
                });
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
        if source != self.source {
            self.source = source;
            self.picked = true;
        }
        if ui.button("Look for cameras again").clicked() {
            self.asked = false;
            self.cameras = None;
        }
    }
}
