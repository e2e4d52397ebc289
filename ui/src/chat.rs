//! A conversation: the padlock and its words, the lines (virtualized), the input, and
//! the "Authenticate buddy" dialog (fingerprint, question, shared secret). Rooms too.

use crate::app::Shell;
use crate::widgets::labeled_edit;
use crate::widgets::{AMBER, GREEN, GREY, RED, chat_words, padlock};
use eframe::egui;
use hush_core::snapshot::{ChatLine, ChatView, SmpView};
use hush_core::{AccountId, ChatSecurity, Command, Secret, Snapshot};

/// Which way to authenticate.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum AuthTab {
    #[default]
    Fingerprint,
    Question,
    Secret,
}

/// The "Authenticate buddy" dialog.
#[derive(Default)]
pub(crate) struct AuthDialog {
    pub(crate) open: bool,
    pub(crate) tab: AuthTab,
    pub(crate) pasted: String,
    pub(crate) question: String,
    pub(crate) answer: String,
    pub(crate) reply: String,
}

const LINE: f32 = 22.0;

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn line_row(ui: &mut egui::Ui, l: &ChatLine) {
    if l.notice {
        ui.label(egui::RichText::new(&l.body).italics().color(GREY));
        return;
    }
    ui.horizontal(|ui| {
        let who = if l.from_me { "me" } else { l.sender.as_str() };
        ui.strong(format!("{who}:"));
        ui.label(&l.body);
        if l.held {
            ui.colored_label(AMBER, "(waiting for a private conversation)");
        } else if l.encrypted {
            ui.weak("(encrypted)");
        } else {
            ui.weak("(unencrypted)");
        }
        if l.from_me && l.delivered {
            ui.weak("delivered");
        }
    });
}

/// The chat page's own state: what is being typed, the padlock's menu and the
/// authentication dialog.
#[derive(Default)]
pub(crate) struct ChatPage {
    chat_input: String,
    pub(crate) chat_menu: bool,
    pub(crate) auth: AuthDialog,
}

impl ChatPage {
    pub(crate) fn show(
        &mut self,
        ui: &mut egui::Ui,
        snap: &Snapshot,
        account: AccountId,
        peer: &str,
        shell: &mut Shell,
    ) {
        let chat = snap
            .chats
            .iter()
            .find(|c| c.account == account && c.peer == peer)
            .cloned();
        let security = chat
            .as_ref()
            .map_or(ChatSecurity::NotPrivate, |c| c.security);
        ui.horizontal(|ui| {
            let lock = padlock(ui, security, 28.0);
            let (words, colour) = chat_words(security);
            ui.vertical(|ui| {
                ui.heading(peer);
                ui.colored_label(colour, words);
            });
            if lock.clicked() {
                self.chat_menu = !self.chat_menu;
            }
            if ui.button("Authenticate buddy").clicked() {
                self.auth = AuthDialog {
                    open: true,
                    ..Default::default()
                };
            }
        });
        if let Some(c) = &chat
            && c.fingerprint_changed
        {
            ui.colored_label(
                RED,
                "Warning: this buddy's key changed since you last talked. Authenticate them again.",
            );
        }
        if self.chat_menu {
            ui.horizontal(|ui| {
                let (start, label) = match security {
                    ChatSecurity::NotPrivate => (true, "Start private conversation"),
                    ChatSecurity::Finished => (true, "Restart private conversation"),
                    _ => (true, "Refresh private conversation"),
                };
                if start && ui.button(label).clicked() {
                    shell.phone.send(Command::OtrStart {
                        account,
                        peer: peer.to_owned(),
                    });
                    self.chat_menu = false;
                }
                if security != ChatSecurity::NotPrivate
                    && ui.button("End private conversation").clicked()
                {
                    shell.phone.send(Command::OtrEnd {
                        account,
                        peer: peer.to_owned(),
                    });
                    self.chat_menu = false;
                }
            });
        }
        if self.auth.open {
            self.auth_dialog(ui, snap, account, peer, chat.as_ref(), shell);
        }
        ui.separator();
        // Input at the bottom; lines fill the rest.
        egui::Panel::bottom("chat-input").show(ui, |ui| {
            ui.horizontal(|ui| {
                let edit = ui.add(
                    egui::TextEdit::singleline(&mut self.chat_input)
                        .hint_text("Write a message")
                        .desired_width(ui.available_width() - 80.0),
                );
                edit.widget_info(|| {
                    egui::WidgetInfo::labeled(egui::Role::TextInput, true, "Message")
                });
                let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                let may = security.may_send();
                let send = ui
                    .add_enabled(may, egui::Button::new("Send"))
                    .on_disabled_hover_text(
                        "The buddy ended the private conversation: end or restart it first",
                    );
                if (send.clicked() || (enter && may)) && !self.chat_input.trim().is_empty() {
                    shell.phone.send(Command::SendChat {
                        account,
                        to: peer.to_owned(),
                        body: std::mem::take(&mut self.chat_input),
                    });
                    edit.request_focus();
                }
            });
        });
        let lines = chat.map(|c| c.lines.clone()).unwrap_or_default();
        egui::ScrollArea::vertical()
            .id_salt("chat-lines")
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show_rows(ui, LINE, lines.len(), |ui, range| {
                for l in &lines[range] {
                    line_row(ui, l);
                }
            });
    }

    fn auth_dialog(
        &mut self,
        ui: &mut egui::Ui,
        snap: &Snapshot,
        account: AccountId,
        peer: &str,
        chat: Option<&ChatView>,
        shell: &mut Shell,
    ) {
        let ours = snap
            .otr_keys
            .iter()
            .find(|k| k.account == account)
            .map(|k| k.fingerprint.clone());
        let theirs = chat.and_then(|c| c.peer_fingerprint.clone());
        let smp = chat.and_then(|c| c.smp.clone());
        let private = chat.is_some_and(|c| {
            matches!(
                c.security,
                ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified
            )
        });
        let d = &mut self.auth;
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong(format!("Authenticate {peer}"));
                if ui.button("Close").clicked() {
                    d.open = false;
                }
            });
            if !private {
                ui.label("Start a private conversation first: authentication happens inside it.");
                return;
            }
            // The buddy is asking us: answer first.
            if let Some(SmpView::Asked(_) | SmpView::SecretAsked) = &smp {
                let prompt = match &smp {
                    Some(SmpView::Asked(q)) => format!("{peer} asks: \"{q}\""),
                    _ => format!("{peer} wants to compare a secret you both know."),
                };
                ui.colored_label(AMBER, prompt);
                ui.horizontal(|ui| {
                    labeled_edit(ui, "Your answer", &mut d.reply, "", true);
                    if ui.button("Answer").clicked() && !d.reply.is_empty() {
                        shell.phone.send(Command::OtrRespond {
                            account,
                            peer: peer.to_owned(),
                            secret: Secret::new(std::mem::take(&mut d.reply)),
                        });
                    }
                });
            }
            ui.horizontal(|ui| {
                ui.selectable_value(&mut d.tab, AuthTab::Fingerprint, "Compare fingerprints");
                ui.selectable_value(&mut d.tab, AuthTab::Question, "Ask a question");
                ui.selectable_value(&mut d.tab, AuthTab::Secret, "Shared secret");
            });
            match d.tab {
                AuthTab::Fingerprint => {
                    ui.label("Read both fingerprints to each other over a channel you trust (in person, or a call you verified).");
                    ui.label(format!("Yours: {}", ours.as_deref().unwrap_or("(no key yet)")));
                    ui.label(format!("{peer}'s: {}", theirs.as_deref().unwrap_or("(unknown)")));
                    let matched = theirs
                        .as_deref()
                        .is_some_and(|t| normalize(t) == normalize(&d.pasted));
                    let colour = if d.pasted.trim().is_empty() {
                        GREY
                    } else if matched {
                        GREEN
                    } else {
                        RED
                    };
                    ui.horizontal(|ui| {
                        let field = ui.add(
                            egui::TextEdit::singleline(&mut d.pasted)
                                .hint_text("Paste or type the fingerprint they read to you")
                                .text_color(colour)
                                .desired_width(380.0),
                        );
                        field.widget_info(|| {
                            egui::WidgetInfo::labeled(
                                egui::Role::TextInput,
                                true,
                                "Fingerprint they read to you",
                            )
                        });
                        if !d.pasted.trim().is_empty() {
                            let text = if matched {
                                "Fingerprints match"
                            } else {
                                "Fingerprints do not match"
                            };
                            ui.colored_label(colour, text);
                        }
                    });
                    ui.horizontal(|ui| {
                        if ui
                            .add_enabled(matched, egui::Button::new("Mark as verified"))
                            .clicked()
                        {
                            shell.phone.send(Command::OtrTrust {
                                account,
                                peer: peer.to_owned(),
                                fingerprint: d.pasted.clone(),
                                verified: true,
                            });
                        }
                        if let Some(t) = &theirs
                            && ui.button("Mark as not verified").clicked()
                        {
                            shell.phone.send(Command::OtrTrust {
                                account,
                                peer: peer.to_owned(),
                                fingerprint: t.clone(),
                                verified: false,
                            });
                        }
                    });
                }
                AuthTab::Question | AuthTab::Secret => {
                    let question = d.tab == AuthTab::Question;
                    if question {
                        ui.label("Ask something only your buddy can answer; the answer never travels, only a proof that both of you typed the same.");
                        labeled_edit(ui, "Question", &mut d.question, "Where did we first meet?", false);
                        labeled_edit(ui, "Answer", &mut d.answer, "", true);
                    } else {
                        ui.label("Agree on a secret in person; both of you type it.");
                        labeled_edit(ui, "Shared secret", &mut d.answer, "", true);
                    }
                    if ui.button("Authenticate").clicked() {
                        if d.answer.is_empty() || (question && d.question.trim().is_empty()) {
                            shell.notice = Some("Enter the question and its answer".into());
                        } else {
                            shell.phone.send(Command::OtrAuthenticate {
                                account,
                                peer: peer.to_owned(),
                                question: question.then(|| d.question.trim().to_owned()),
                                secret: Secret::new(std::mem::take(&mut d.answer)),
                            });
                        }
                    }
                }
            }
            match &smp {
                Some(SmpView::InProgress(p)) => {
                    ui.horizontal(|ui| {
                        ui.add(egui::Spinner::new());
                        ui.label(format!("Waiting for {peer} to answer… ({p}%)"));
                        if ui.button("Cancel authentication").clicked() {
                            shell.phone.send(Command::OtrAbortAuthentication {
                                account,
                                peer: peer.to_owned(),
                            });
                        }
                    });
                }
                Some(SmpView::Succeeded) => {
                    ui.colored_label(GREEN, format!("Authentication succeeded: {peer} is verified."));
                }
                Some(SmpView::Failed) => {
                    ui.colored_label(
                        RED,
                        format!("Authentication failed: the answers differ. {peer} is not verified."),
                    );
                }
                Some(SmpView::Aborted) => {
                    ui.colored_label(AMBER, "Authentication was cancelled.");
                }
                _ => {}
            }
        });
    }

    pub(crate) fn show_room(
        &mut self,
        ui: &mut egui::Ui,
        snap: &Snapshot,
        account: AccountId,
        room: &str,
        shell: &mut Shell,
    ) {
        let Some(r) = snap
            .rooms
            .iter()
            .find(|r| r.account == account && r.room == room)
            .cloned()
        else {
            ui.label("You are not in this room.");
            return;
        };
        ui.horizontal(|ui| {
            ui.heading(room);
            ui.colored_label(
                GREY,
                "Rooms are not end-to-end encrypted: the server and every member can read them.",
            );
            if ui.button("Leave room").clicked() {
                shell.phone.send(Command::LeaveRoom {
                    account,
                    room: room.to_owned(),
                });
                shell.page = crate::app::Page::Home;
            }
        });
        if !r.joined {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label("Joining…");
            });
        }
        ui.label(format!("In the room: {}", r.occupants.join(", ")));
        egui::Panel::bottom("room-input").show(ui, |ui| {
            ui.horizontal(|ui| {
                let edit = ui.add(
                    egui::TextEdit::singleline(&mut self.chat_input).hint_text("Write to the room"),
                );
                edit.widget_info(|| {
                    egui::WidgetInfo::labeled(egui::Role::TextInput, true, "Room message")
                });
                let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if (ui.button("Send").clicked() || enter) && !self.chat_input.trim().is_empty() {
                    shell.phone.send(Command::SendRoom {
                        account,
                        room: room.to_owned(),
                        body: std::mem::take(&mut self.chat_input),
                    });
                }
            });
        });
        egui::ScrollArea::vertical()
            .id_salt("room-lines")
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show_rows(ui, LINE, r.lines.len(), |ui, range| {
                for l in &r.lines[range] {
                    line_row(ui, l);
                }
            });
    }
}
