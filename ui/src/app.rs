//! The top-level view: unlock the profile if needed, then the accounts overview.

use eframe::egui;
use hush_core::snapshot::AccountStatus;
use hush_core::{Command, Event, Phone, Protocol, Secret};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The application state egui calls every frame.
pub struct HushApp {
    phone: Arc<Phone>,
    events: broadcast::Receiver<Event>,
    master_password: String,
    /// The last failure, shown until the next success.
    notice: Option<String>,
}

impl HushApp {
    /// Wraps a running phone.
    pub fn new(phone: Arc<Phone>) -> Self {
        let events = phone.events();
        HushApp {
            phone,
            events,
            master_password: String::new(),
            notice: None,
        }
    }

    fn drain_events(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(Event::CommandFailed { command, error }) => {
                    self.notice = Some(format!("Could not {command}: {error}"))
                }
                Ok(Event::Unlocked) => self.notice = None,
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    }

    /// Draws one frame; separate from `eframe::App` so UI tests can drive it directly.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.drain_events();
        let snap = self.phone.snapshot();
        egui::Panel::top("top").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Hushphone");
                ui.separator();
                let lock = if snap.master_password_set {
                    "Profile protected by a master password"
                } else {
                    "No master password set"
                };
                ui.label(lock);
            });
        });
        egui::CentralPanel::default_margins().show(ui, |ui| {
            if let Some(notice) = &self.notice {
                ui.colored_label(ui.visuals().error_fg_color, notice);
            }
            if snap.locked {
                self.unlock_view(ui);
                return;
            }
            ui.heading("Accounts");
            if snap.accounts.is_empty() {
                ui.label("No accounts yet. Add one with `hushphone account add`.");
            }
            egui::Grid::new("accounts").striped(true).show(ui, |ui| {
                for a in &snap.accounts {
                    let proto = match a.config.protocol() {
                        Protocol::Sip => "SIP",
                        Protocol::Xmpp => "XMPP",
                    };
                    ui.label(proto);
                    ui.label(&a.config.address);
                    ui.label(match &a.status {
                        AccountStatus::Offline => "offline".to_owned(),
                        AccountStatus::Connecting => "connecting…".to_owned(),
                        AccountStatus::Online => "online".to_owned(),
                        AccountStatus::Error(e) => format!("error: {e}"),
                    });
                    ui.end_row();
                }
            });
        });
    }

    fn unlock_view(&mut self, ui: &mut egui::Ui) {
        ui.heading("Unlock your profile");
        ui.label("Your saved passwords and keys are sealed with your master password.");
        let field = ui.add(
            egui::TextEdit::singleline(&mut self.master_password)
                .password(true)
                .hint_text("Master password"),
        );
        field.widget_info(|| {
            egui::WidgetInfo::labeled(egui::Role::PasswordInput, true, "Master password")
        });
        let submit = ui.button("Unlock").clicked()
            || (field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)));
        if submit {
            let password = Secret::new(std::mem::take(&mut self.master_password));
            self.phone.send(Command::Unlock { password });
        }
    }
}

/// The eframe application: the app plus run-time options.
pub(crate) struct Window {
    pub(crate) app: HushApp,
    pub(crate) screenshot: Option<crate::screenshot::ScreenshotJob>,
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.ui(ui);
        if let Some(job) = &mut self.screenshot {
            job.tick(ui.ctx());
        }
    }
}
