//! The top-level view: unlock the profile if needed, then a navigation column (pages,
//! open chats and rooms, calls) and the selected page. The window keeps only view state;
//! everything else comes from the core's snapshot, and every action is a command.

use crate::accounts::AccountsPage;
use crate::calls::CallsPage;
use crate::chat::{AuthDialog, ChatPage};
use crate::contacts::ContactsPage;
use crate::settings::SettingsPage;
use crate::widgets::{call_words, chat_words, labeled_edit};
use eframe::egui;
use hush_core::command::MediaChoice;
use hush_core::snapshot::CallState;
use hush_core::{AccountId, Command, Event, Phone, Protocol, Secret, Snapshot};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// What the main area shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Page {
    Home,
    Accounts,
    Contacts,
    Chat(AccountId, String),
    Room(AccountId, String),
    Calls,
    Settings,
}

/// The join-room form.
#[derive(Default)]
pub(crate) struct JoinForm {
    open: bool,
    account: Option<AccountId>,
    room: String,
    nick: String,
    password: String,
}

/// What every page shares: the phone, which page is shown, the last failure and the
/// audio for new calls. Each page owns the rest of its state and draws itself with
/// `show(ui, &snapshot, &mut shell)`.
pub(crate) struct Shell {
    pub(crate) phone: Arc<Phone>,
    pub(crate) page: Page,
    /// The last failure, shown until dismissed or the next success.
    pub(crate) notice: Option<String>,
    /// Microphone and speaker for new calls.
    pub(crate) audio: MediaChoice,
    /// The screen "Share screen" shares.
    pub(crate) screen: hush_core::command::ScreenSpec,
    /// The camera video calls send.
    pub(crate) camera: crate::camera::CameraChoice,
}

/// The application state egui calls every frame.
pub struct HushApp {
    pub(crate) shell: Shell,
    events: broadcast::Receiver<Event>,
    master_password: String,
    accounts: AccountsPage,
    contacts: ContactsPage,
    chat: ChatPage,
    pub(crate) calls: CallsPage,
    settings: SettingsPage,
    join: JoinForm,
    /// A fixed picture to draw instead of the phone's (frame-time benchmarks).
    fixed: Option<Arc<Snapshot>>,
    /// The window's title as last set (it says when the screen is shared).
    title: &'static str,
}

impl HushApp {
    /// Wraps a running phone.
    pub fn new(phone: Arc<Phone>) -> Self {
        let events = phone.events();
        HushApp {
            shell: Shell {
                phone,
                page: Page::Home,
                notice: None,
                audio: MediaChoice {
                    source: hush_core::command::SourceSpec::Device,
                    sink: hush_core::command::SinkSpec::Device,
                    video: None,
                },
                screen: hush_core::command::ScreenSpec::default(),
                camera: crate::camera::CameraChoice::default(),
            },
            events,
            master_password: String::new(),
            accounts: AccountsPage::default(),
            contacts: ContactsPage::default(),
            chat: ChatPage::default(),
            calls: CallsPage::default(),
            settings: SettingsPage::default(),
            join: JoinForm::default(),
            fixed: None,
            title: "Hushphone",
        }
    }

    /// Draws `snapshot` instead of the phone's, for measuring frame time with large
    /// contact lists and conversations. Commands still go to `phone`.
    #[doc(hidden)]
    pub fn with_fixed_snapshot(mut self, snapshot: Snapshot) -> Self {
        self.fixed = Some(Arc::new(snapshot));
        self
    }

    /// Opens a page by name (home, accounts, contacts, calls, settings, chat:ADDRESS).
    pub fn open_page(&mut self, name: &str) {
        let snap = self
            .fixed
            .clone()
            .unwrap_or_else(|| self.shell.phone.snapshot());
        self.shell.page = match name {
            "accounts" => Page::Accounts,
            "contacts" => Page::Contacts,
            "calls" => Page::Calls,
            "settings" => Page::Settings,
            other => match other.strip_prefix("chat:") {
                Some(peer) => match snap
                    .accounts
                    .iter()
                    .find(|a| a.config.protocol() == Protocol::Xmpp)
                {
                    Some(a) => Page::Chat(a.config.id, peer.to_owned()),
                    None => Page::Home,
                },
                None => Page::Home,
            },
        };
    }

    /// Starts the built-in echo test (as the button does).
    pub fn start_echo_test(&mut self) {
        self.shell.echo_test();
    }

    /// Starts the echo test sharing the screen (the sharing bar shows).
    pub fn start_share_test(&mut self) {
        self.shell.share_test();
    }

    /// Starts the echo test with video.
    pub fn start_video_test(&mut self) {
        self.shell.video_test();
    }

    /// True once some call is encrypted (for screenshots of a secured call).
    pub(crate) fn any_secure_call(&self) -> bool {
        self.shell
            .phone
            .snapshot()
            .calls
            .iter()
            .any(|c| c.security.is_encrypted())
    }

    /// Uses this audio for calls (tests and machines without a sound card use a tone).
    pub fn with_audio(mut self, audio: MediaChoice) -> Self {
        self.shell.audio = audio;
        self
    }

    /// Shares this screen (the default: the whole of `$DISPLAY`).
    pub fn with_screen(mut self, screen: hush_core::command::ScreenSpec) -> Self {
        self.shell.screen = screen;
        self
    }

    fn drain_events(&mut self) {
        loop {
            match self.events.try_recv() {
                Ok(Event::CommandFailed {
                    command,
                    error,
                    permanent,
                }) => {
                    self.shell.notice = Some(if permanent {
                        format!(
                            "Could not {command}: {error}. Trying again will not help until that is changed."
                        )
                    } else {
                        format!("Could not {command}: {error}")
                    })
                }
                Ok(Event::Unlocked) => self.shell.notice = None,
                Ok(Event::CallIncoming { .. }) => self.shell.page = Page::Calls,
                Ok(Event::CallState { call, state }) => match state {
                    CallState::Connected => {
                        self.calls
                            .connected_since
                            .entry(call)
                            .or_insert_with(Instant::now);
                    }
                    CallState::Ended(_) => {
                        self.calls.connected_since.remove(&call);
                        self.calls.muted.remove(&call);
                    }
                    _ => {}
                },
                Ok(Event::ChatError { reason, .. }) => self.shell.notice = Some(reason),
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    }

    /// Draws one frame; separate from `eframe::App` so UI tests can drive it directly.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        self.drain_events();
        let phone = self.shell.phone.clone();
        self.shell.camera.update(ui.ctx(), &phone);
        let snap = self
            .fixed
            .clone()
            .unwrap_or_else(|| self.shell.phone.snapshot());
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
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let dark = ui.visuals().dark_mode;
                    if ui
                        .button(if dark { "Light theme" } else { "Dark theme" })
                        .clicked()
                    {
                        let theme = if dark {
                            egui::Theme::Light
                        } else {
                            egui::Theme::Dark
                        };
                        ui.ctx().set_theme(theme);
                    }
                });
            });
            // Sharing the screen is never easy to miss: a bar above everything, with
            // the way to stop it, and the window's title says so too (it shows in
            // the task bar while the window is minimised).
            let sharing: Vec<_> = snap
                .calls
                .iter()
                .filter(|c| c.sharing_screen)
                .map(|c| c.id)
                .collect();
            let title = if sharing.is_empty() {
                "Hushphone"
            } else {
                "Hushphone — sharing your screen"
            };
            if self.title != title {
                self.title = title;
                ui.ctx()
                    .send_viewport_cmd(egui::ViewportCommand::Title(title.to_owned()));
            }
            if !sharing.is_empty() {
                egui::Frame::new()
                    .fill(crate::widgets::RED)
                    .inner_margin(6.0)
                    .show(ui, |ui| {
                        ui.horizontal(|ui| {
                            ui.colored_label(
                                egui::Color32::WHITE,
                                egui::RichText::new("You are sharing your screen").strong(),
                            );
                            if ui.button("Stop sharing").clicked() {
                                for call in &sharing {
                                    self.shell.phone.send(Command::ShareScreen {
                                        call: *call,
                                        on: false,
                                        screen: None,
                                    });
                                }
                            }
                        });
                    });
            }
            if let Some(notice) = self.shell.notice.clone() {
                ui.horizontal(|ui| {
                    ui.colored_label(ui.visuals().error_fg_color, notice);
                    if ui.small_button("Dismiss").clicked() {
                        self.shell.notice = None;
                    }
                });
            }
        });
        if snap.locked {
            egui::CentralPanel::default_margins().show(ui, |ui| self.unlock_view(ui));
            return;
        }
        egui::Panel::left("nav")
            .resizable(true)
            .default_size(230.0)
            .show(ui, |ui| self.nav(ui, &snap));
        if self.shell.page != Page::Settings {
            self.settings.leave_settings(&mut self.shell);
        }
        egui::CentralPanel::default_margins().show(ui, |ui| match self.shell.page.clone() {
            Page::Home => self.home_page(ui, &snap),
            Page::Accounts => self.accounts.show(ui, &snap, &mut self.shell),
            Page::Contacts => self.contacts.show(ui, &snap, &mut self.shell),
            Page::Chat(a, p) => self.chat.show(ui, &snap, a, &p, &mut self.shell),
            Page::Room(a, r) => self.chat.show_room(ui, &snap, a, &r, &mut self.shell),
            Page::Calls => self.calls.show(ui, &snap, &mut self.shell),
            Page::Settings => self.settings.show(ui, &snap, &mut self.shell),
        });
    }

    fn nav(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        for (page, label) in [
            (Page::Home, "Start"),
            (Page::Accounts, "Accounts"),
            (Page::Contacts, "Contacts"),
            (Page::Calls, "Calls"),
            (Page::Settings, "Settings"),
        ] {
            let mut text = label.to_owned();
            if page == Page::Calls {
                let live = snap
                    .calls
                    .iter()
                    .filter(|c| !c.automatic && !matches!(c.state, CallState::Ended(_)))
                    .count();
                if live > 0 {
                    text = format!("Calls ({live})");
                }
            }
            if page == Page::Contacts && !snap.requests.iter().all(|r| r.ignored) {
                text = "Contacts (requests)".into();
            }
            if ui.selectable_label(self.shell.page == page, text).clicked() {
                self.shell.page = page;
            }
        }
        ui.separator();
        ui.strong("Chats");
        for c in &snap.chats {
            ui.horizontal(|ui| {
                let (words, colour) = chat_words(c.security);
                crate::widgets::dot(ui, colour, words);
                let page = Page::Chat(c.account, c.peer.clone());
                if ui
                    .selectable_label(self.shell.page == page, &c.peer)
                    .clicked()
                {
                    self.shell.page = page;
                    self.chat.chat_menu = false;
                    self.chat.auth = AuthDialog::default();
                }
            });
        }
        for r in &snap.rooms {
            let page = Page::Room(r.account, r.room.clone());
            if ui
                .selectable_label(self.shell.page == page, format!("# {}", r.room))
                .clicked()
            {
                self.shell.page = page;
            }
        }
        if ui.button("Join a room").clicked() {
            self.join.open = !self.join.open;
        }
        if self.join.open {
            self.join_form(ui, snap);
        }
        ui.separator();
        for c in snap
            .calls
            .iter()
            .filter(|c| !c.automatic && !matches!(c.state, CallState::Ended(_)))
        {
            // The same colour as the call's own card: one mapping for every surface.
            let (_, colour) = call_words(&c.security);
            if ui
                .add(egui::Button::new(
                    egui::RichText::new(format!("Call: {}", c.peer)).color(colour),
                ))
                .clicked()
            {
                self.shell.page = Page::Calls;
            }
        }
    }

    fn join_form(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        let accounts: Vec<(AccountId, String)> = snap
            .accounts
            .iter()
            .filter(|a| a.config.protocol() == Protocol::Xmpp)
            .map(|a| (a.config.id, a.config.address.clone()))
            .collect();
        let j = &mut self.join;
        if j.account.is_none() {
            j.account = accounts.first().map(|a| a.0);
        }
        egui::ComboBox::from_label("Room account")
            .selected_text(
                accounts
                    .iter()
                    .find(|a| Some(a.0) == j.account)
                    .map(|a| a.1.clone())
                    .unwrap_or_default(),
            )
            .show_ui(ui, |ui| {
                for (id, a) in &accounts {
                    ui.selectable_value(&mut j.account, Some(*id), a);
                }
            });
        labeled_edit(
            ui,
            "Room",
            &mut j.room,
            "room@conference.example.org",
            false,
        );
        labeled_edit(ui, "Nickname", &mut j.nick, "", false);
        labeled_edit(
            ui,
            "Room password",
            &mut j.password,
            "optional; a new room gets it",
            true,
        );
        if ui.button("Join").clicked()
            && let Some(account) = j.account
        {
            let room = j.room.trim().to_owned();
            self.shell.phone.send(Command::JoinRoom {
                account,
                room: room.clone(),
                nick: j.nick.trim().to_owned(),
                password: (!j.password.is_empty())
                    .then(|| Secret::new(std::mem::take(&mut j.password))),
            });
            self.shell.page = Page::Room(account, room);
            *j = JoinForm::default();
        }
    }

    fn home_page(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        ui.heading("Private calls and chats");
        ui.label(
            "Calls are encrypted end to end with ZRTP: compare the short code with your peer and you know no one is in the middle. Chats are made private with OTR.",
        );
        ui.add_space(8.0);
        if ui
            .add(egui::Button::new(
                egui::RichText::new("Try a secure echo test").size(18.0),
            ))
            .on_hover_text("Calls a built-in echo on this computer: no account needed")
            .clicked()
        {
            self.shell.echo_test();
        }
        ui.add_space(8.0);
        if snap.accounts.is_empty() {
            ui.label("To call or chat with others, add an account:");
        }
        ui.horizontal(|ui| {
            if ui.button("Add or create an account").clicked() {
                self.shell.page = Page::Accounts;
            }
            if !snap.master_password_set && ui.button("Set a master password").clicked() {
                self.shell.page = Page::Settings;
            }
        });
        if !snap.master_password_set {
            ui.label(
                "A master password encrypts your saved passwords and keys on disk. Optional, recommended.",
            );
        }
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
            self.shell.phone.send(Command::Unlock { password });
        }
    }
}

/// The eframe application: the app plus run-time options.
pub(crate) struct Window {
    pub(crate) app: HushApp,
    pub(crate) screenshot: Option<crate::screenshot::ScreenshotJob>,
    /// Hold the screenshot until a call is secure (at most 15 s).
    pub(crate) wait_secure: bool,
    /// ... and until the peer's pictures show.
    pub(crate) wait_video: bool,
    pub(crate) started: Instant,
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.app.ui(ui);
        let waiting =
            !self.app.any_secure_call() || (self.wait_video && !self.app.calls.showing_video());
        if self.wait_secure
            && waiting
            && self.started.elapsed() < std::time::Duration::from_secs(15)
        {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(100));
            return;
        }
        if let Some(job) = &mut self.screenshot {
            job.tick(ui.ctx());
        }
    }
}
