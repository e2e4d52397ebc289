//! The two security indicators: the chat padlock (exactly four looks) and the call's
//! SAS panel. Each is drawn, coloured and worded, and carries an accessible label, so
//! colour is never the only signal.

use eframe::egui::{self, Color32, Pos2, Rect, Stroke, StrokeKind, Vec2};
use hush_core::{CallSecurity, ChatSecurity};

pub(crate) const GREEN: Color32 = Color32::from_rgb(0x2e, 0x9d, 0x4f);
pub(crate) const AMBER: Color32 = Color32::from_rgb(0xd9, 0x8e, 0x04);
pub(crate) const RED: Color32 = Color32::from_rgb(0xd0, 0x3a, 0x2f);
pub(crate) const GREY: Color32 = Color32::from_rgb(0x8a, 0x8f, 0x98);
/// A verified contact presents a key we never verified: neither the green of trust nor
/// the orange of an ordinary first call.
pub(crate) const VIOLET: Color32 = Color32::from_rgb(0x9b, 0x3d, 0xc8);

/// Words and colour for a chat's state.
pub(crate) fn chat_words(s: ChatSecurity) -> (&'static str, Color32) {
    match s {
        ChatSecurity::NotPrivate => ("Not private: the server can read this chat", GREY),
        ChatSecurity::PrivateUnverified => ("Private, but your buddy is not verified", AMBER),
        ChatSecurity::PrivateVerified => ("Private and verified", GREEN),
        ChatSecurity::Finished => ("Your buddy ended the private conversation", RED),
    }
}

fn arc(center: Pos2, r: f32, from: f32, to: f32) -> Vec<Pos2> {
    (0..=16)
        .map(|i| {
            let a = from + (to - from) * i as f32 / 16.0;
            center + Vec2::new(a.cos() * r, -a.sin() * r)
        })
        .collect()
}

/// Draws the padlock for `s` in `size` points; clicking it is the caller's business.
pub(crate) fn padlock(ui: &mut egui::Ui, s: ChatSecurity, size: f32) -> egui::Response {
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(size), egui::Sense::click());
    let (words, colour) = chat_words(s);
    response.widget_info(|| {
        egui::WidgetInfo::labeled(egui::Role::Button, true, format!("Padlock: {words}"))
    });
    let p = ui.painter_at(rect.expand(2.0));
    let w = size;
    let body = Rect::from_min_size(
        rect.min + Vec2::new(w * 0.15, w * 0.45),
        Vec2::new(w * 0.7, w * 0.5),
    );
    let stroke = Stroke::new(w * 0.09, colour);
    let r = w * 0.22;
    let shackle_centre = Pos2::new(body.center().x, body.top());
    match s {
        ChatSecurity::NotPrivate => {
            // Open: the shackle is lifted and swung to the right.
            let c = shackle_centre + Vec2::new(w * 0.2, -w * 0.12);
            p.add(egui::Shape::line(
                arc(c, r, 0.0, std::f32::consts::PI),
                stroke,
            ));
            p.line_segment([c + Vec2::new(r, 0.0), c + Vec2::new(r, w * 0.1)], stroke);
        }
        ChatSecurity::Finished => {
            // Broken: the shackle has a gap and the body a crack.
            let pts = arc(shackle_centre, r, 0.0, std::f32::consts::PI);
            p.add(egui::Shape::line(pts[..6].to_vec(), stroke));
            p.add(egui::Shape::line(pts[10..].to_vec(), stroke));
        }
        _ => {
            p.add(egui::Shape::line(
                arc(shackle_centre, r, 0.0, std::f32::consts::PI),
                stroke,
            ));
        }
    }
    p.rect_filled(body, w * 0.08, colour);
    let mark = Stroke::new(w * 0.08, Color32::WHITE);
    let c = body.center();
    match s {
        ChatSecurity::PrivateVerified => {
            p.line_segment(
                [
                    c + Vec2::new(-w * 0.15, 0.0),
                    c + Vec2::new(-w * 0.04, w * 0.1),
                ],
                mark,
            );
            p.line_segment(
                [
                    c + Vec2::new(-w * 0.04, w * 0.1),
                    c + Vec2::new(w * 0.16, -w * 0.11),
                ],
                mark,
            );
        }
        ChatSecurity::PrivateUnverified => {
            p.line_segment(
                [c + Vec2::new(0.0, -w * 0.14), c + Vec2::new(0.0, w * 0.04)],
                mark,
            );
            p.circle_filled(c + Vec2::new(0.0, w * 0.12), w * 0.045, Color32::WHITE);
        }
        ChatSecurity::Finished => {
            let crack = [
                Pos2::new(c.x - w * 0.02, body.top()),
                Pos2::new(c.x + w * 0.06, c.y - w * 0.06),
                Pos2::new(c.x - w * 0.05, c.y + w * 0.04),
                Pos2::new(c.x + w * 0.03, body.bottom()),
            ];
            p.add(egui::Shape::line(
                crack.to_vec(),
                Stroke::new(w * 0.05, Color32::WHITE),
            ));
        }
        ChatSecurity::NotPrivate => {
            p.circle_filled(c, w * 0.06, Color32::WHITE);
        }
    }
    if response.hovered() {
        p.rect_stroke(rect, 4.0, Stroke::new(1.0, GREY), StrokeKind::Outside);
    }
    response.on_hover_text(words)
}

/// A coloured dot with an accessible meaning (presence, chat state).
pub(crate) fn dot(ui: &mut egui::Ui, colour: Color32, meaning: &str) {
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(12.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 5.0, colour);
    let m = meaning.to_owned();
    response.widget_info(move || egui::WidgetInfo::labeled(egui::Role::Image, true, m.clone()));
    response.on_hover_text(meaning);
}

/// Words and colour for a call's state.
pub(crate) fn call_words(s: &CallSecurity) -> (String, Color32) {
    match s {
        CallSecurity::Cleartext => ("Not encrypted: anyone on the path can listen".into(), RED),
        CallSecurity::Negotiating => ("Negotiating encryption…".into(), GREY),
        CallSecurity::Secure {
            verified: false, ..
        } => (
            "Encrypted. Compare the code with your peer to be sure no one is in the middle".into(),
            AMBER,
        ),
        CallSecurity::Secure { verified: true, .. } => ("Encrypted and verified".into(), GREEN),
        CallSecurity::CacheMismatch { .. } => (
            "Warning: the keys do not match earlier calls. Compare the code now".into(),
            RED,
        ),
        CallSecurity::NewKey { .. } => (
            "New key for a verified contact: compare the code aloud. \
             Someone may be in the middle, or your contact has a new device"
                .into(),
            VIOLET,
        ),
        CallSecurity::Failed(reason) => (format!("Not secure: {reason}"), RED),
    }
}

/// The SAS panel: the code in large type when there is one, with colour and words.
pub(crate) fn sas_indicator(ui: &mut egui::Ui, s: &CallSecurity) {
    let (words, colour) = call_words(s);
    egui::Frame::new()
        .stroke(Stroke::new(2.0, colour))
        .corner_radius(6.0)
        .inner_margin(10.0)
        .show(ui, |ui| {
            ui.horizontal(|ui| {
                if let CallSecurity::NewKey { .. } = s {
                    new_key_icon(ui, colour);
                }
                match s {
                    CallSecurity::Secure { sas, .. }
                    | CallSecurity::CacheMismatch { sas }
                    | CallSecurity::NewKey { sas } => {
                        let big = ui.label(
                            egui::RichText::new(sas.to_uppercase())
                                .monospace()
                                .size(34.0)
                                .strong()
                                .color(colour),
                        );
                        big.widget_info(|| {
                            egui::WidgetInfo::labeled(
                                egui::Role::Label,
                                true,
                                format!("Security code {sas}"),
                            )
                        });
                    }
                    CallSecurity::Negotiating => {
                        ui.add(egui::Spinner::new());
                    }
                    _ => {}
                }
                ui.vertical(|ui| {
                    ui.colored_label(colour, egui::RichText::new(words).strong());
                });
            });
        });
}

/// A key with a question mark: "a key we have not seen for this contact".
fn new_key_icon(ui: &mut egui::Ui, colour: Color32) {
    let size = 34.0;
    let (rect, response) = ui.allocate_exact_size(Vec2::splat(size), egui::Sense::hover());
    response
        .widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "Warning: a new key"));
    let p = ui.painter_at(rect.expand(2.0));
    let w = size;
    let stroke = Stroke::new(w * 0.09, colour);
    // The bow, the shaft and two teeth.
    let bow = rect.min + Vec2::new(w * 0.28, w * 0.62);
    p.circle_stroke(bow, w * 0.17, stroke);
    let tip = rect.min + Vec2::new(w * 0.95, w * 0.62);
    p.line_segment([bow + Vec2::new(w * 0.17, 0.0), tip], stroke);
    for x in [0.72, 0.88] {
        let at = rect.min + Vec2::new(w * x, w * 0.62);
        p.line_segment([at, at + Vec2::new(0.0, w * 0.15)], stroke);
    }
    // A question mark above the shaft.
    p.text(
        rect.min + Vec2::new(w * 0.66, w * 0.22),
        egui::Align2::CENTER_CENTER,
        "?",
        egui::FontId::proportional(w * 0.7),
        colour,
    );
    response.on_hover_text("A key you have not verified for this contact");
}

/// A text field with an accessible label (and the label shown before it).
pub(crate) fn labeled_edit(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut String,
    hint: &str,
    password: bool,
) -> egui::Response {
    ui.horizontal(|ui| {
        ui.label(format!("{label}:"));
        let r = ui.add(
            egui::TextEdit::singleline(value)
                .password(password)
                .hint_text(hint),
        );
        let role = if password {
            egui::Role::PasswordInput
        } else {
            egui::Role::TextInput
        };
        let name = label.to_owned();
        r.widget_info(move || egui::WidgetInfo::labeled(role, true, name.clone()));
        r
    })
    .inner
}
