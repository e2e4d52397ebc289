//! A call's pictures on screen: the newest picture of each side, scaled to the width
//! shown and turned to RGB there, so only what is displayed is converted and uploaded.
//! Nothing is kept but the two textures.

use eframe::egui;
use hush_core::I420Frame;

/// Widest the peer's picture is shown.
pub(crate) const THEIRS_WIDTH: f32 = 480.0;
/// Width of the self-view.
pub(crate) const OURS_WIDTH: f32 = 160.0;

/// `frame` scaled (nearest neighbour) to at most `width` pixels wide, as RGB.
pub(crate) fn to_image(frame: &I420Frame, width: usize) -> egui::ColorImage {
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    let w = width.clamp(1, fw);
    let h = (fh * w / fw).max(1);
    let (py, pu, pv) = frame.planes();
    let cw = frame.chroma_width();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for oy in 0..h {
        let y = oy * fh / h;
        for ox in 0..w {
            let x = ox * fw / w;
            let c = (y / 2) * cw + x / 2;
            // BT.601, studio range.
            let (l, u, v) = (
                i32::from(py[y * fw + x]) - 16,
                i32::from(pu[c]) - 128,
                i32::from(pv[c]) - 128,
            );
            let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
            rgb.push(clamp(298 * l + 409 * v));
            rgb.push(clamp(298 * l - 100 * u - 208 * v));
            rgb.push(clamp(298 * l + 516 * u));
        }
    }
    egui::ColorImage::from_rgb([w, h], &rgb)
}

/// The textures of one call's pictures.
#[derive(Default)]
pub(crate) struct CallTextures {
    theirs: Option<egui::TextureHandle>,
    ours: Option<egui::TextureHandle>,
    /// A screen the peer shares is shown pixel for pixel (scrolled), not fitted.
    actual_size: bool,
}

/// Tallest a screen shown at 100 % is before it scrolls.
const ACTUAL_SIZE_HEIGHT: f32 = 480.0;

fn refresh(
    ctx: &egui::Context,
    slot: &hush_core::CallPictures,
    theirs: bool,
    tex: &mut Option<egui::TextureHandle>,
    name: &str,
    width: f32,
) {
    let view = if theirs { &slot.theirs } else { &slot.ours };
    let newest = view.lock().ok().and_then(|mut s| s.take());
    let Some(frame) = newest else { return };
    let image = to_image(&frame, width.min(f32::from(u16::MAX)) as usize);
    match tex {
        Some(t) => t.set(image, egui::TextureOptions::LINEAR),
        None => *tex = Some(ctx.load_texture(name, image, egui::TextureOptions::LINEAR)),
    }
}

impl CallTextures {
    /// The peer's picture has come.
    pub(crate) fn has_theirs(&self) -> bool {
        self.theirs.is_some()
    }

    /// Shows the peer's picture and the self-view, taking the newest of each. A screen
    /// the peer shares (`their_screen`) can be fitted or shown at 100 %.
    pub(crate) fn show(
        &mut self,
        ui: &mut egui::Ui,
        pictures: &hush_core::CallPictures,
        id: u64,
        their_screen: bool,
    ) {
        let ctx = ui.ctx().clone();
        if their_screen {
            ui.horizontal(|ui| {
                ui.label("Their screen:");
                if ui.selectable_label(!self.actual_size, "Fit").clicked() {
                    self.actual_size = false;
                }
                if ui.selectable_label(self.actual_size, "100 %").clicked() {
                    self.actual_size = true;
                }
            });
        } else {
            self.actual_size = false;
        }
        let fitted = ui.available_width().min(THEIRS_WIDTH);
        // At 100 % the picture is converted at its own width (`to_image` never scales
        // up).
        let width = if self.actual_size { f32::MAX } else { fitted };
        refresh(
            &ctx,
            pictures,
            true,
            &mut self.theirs,
            &format!("theirs-{id}"),
            width,
        );
        refresh(
            &ctx,
            pictures,
            false,
            &mut self.ours,
            &format!("ours-{id}"),
            OURS_WIDTH,
        );
        ui.horizontal(|ui| {
            match &self.theirs {
                Some(t) if self.actual_size => {
                    let size = t.size_vec2();
                    egui::ScrollArea::both()
                        .max_width((ui.available_width() - OURS_WIDTH - 16.0).max(160.0))
                        .max_height(ACTUAL_SIZE_HEIGHT)
                        .show(ui, |ui| {
                            ui.add(
                                egui::Image::new(t)
                                    .fit_to_exact_size(size)
                                    .alt_text("Their video"),
                            );
                        });
                }
                Some(t) => {
                    ui.add(
                        egui::Image::new(t)
                            .max_width(fitted)
                            .alt_text("Their video"),
                    );
                }
                None => {
                    ui.label("Waiting for their video…");
                }
            }
            if let Some(t) = &self.ours {
                ui.add(
                    egui::Image::new(t)
                        .max_width(OURS_WIDTH)
                        .alt_text("Your video"),
                );
            }
        });
        // Pictures come about 15 times a second; the window looks again that often
        // only while a video call is on screen.
        ctx.request_repaint_after(std::time::Duration::from_millis(66));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_scaled_to_the_width_shown_and_keep_their_colours() {
        // Studio-range white and the pattern's red bar.
        let mut f = I420Frame::black(640, 480).expect("frame");
        {
            let (y, u, v) = f.planes_mut();
            y.fill(81);
            u.fill(90);
            v.fill(240);
        }
        let img = to_image(&f, 160);
        assert_eq!(img.size, [160, 120]);
        let p = img.pixels[0];
        assert!(p.r() > 220 && p.g() < 40 && p.b() < 40, "{p:?}");
        // Never wider than the picture.
        assert_eq!(to_image(&f, 4000).size, [640, 480]);
    }
}
