//! Contacts: grouped, filterable, with presence and row actions; adding a contact;
//! answering subscription requests (authorize, deny, ignore).

use crate::app::{Page, Shell};
use crate::widgets::labeled_edit;
use crate::widgets::{AMBER, GREEN, GREY, RED};
use eframe::egui;
use hush_core::command::RequestAnswer;
use hush_core::snapshot::{ContactView, Presence, Subscription};
use hush_core::{AccountId, Command, Protocol, Snapshot};
use std::collections::BTreeMap;

/// The add-contact form.
#[derive(Default)]
pub(crate) struct AddContact {
    pub(crate) open: bool,
    pub(crate) account: Option<AccountId>,
    pub(crate) address: String,
    pub(crate) alias: String,
    pub(crate) group: String,
    pub(crate) error: Option<String>,
}

fn presence_words(p: Presence) -> (&'static str, egui::Color32) {
    match p {
        Presence::Available => ("available", GREEN),
        Presence::Away => ("away", AMBER),
        Presence::DoNotDisturb => ("do not disturb", RED),
        Presence::Offline => ("offline", GREY),
    }
}

const ROW: f32 = 26.0;

/// The contacts page's own state: the add form and the filter.
#[derive(Default)]
pub(crate) struct ContactsPage {
    add_contact: AddContact,
    contact_filter: String,
}

impl ContactsPage {
    pub(crate) fn show(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
        ui.heading("Contacts");
        for r in snap.requests.iter().filter(|r| !r.ignored) {
            egui::Frame::new()
                .stroke(egui::Stroke::new(1.0, AMBER))
                .inner_margin(6.0)
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        ui.label(format!("{} asks to see when you are online.", r.from));
                        for (label, answer) in [
                            ("Authorize", RequestAnswer::Authorize),
                            ("Deny", RequestAnswer::Deny),
                            ("Ignore", RequestAnswer::Ignore),
                        ] {
                            if ui.button(format!("{label} {}", r.from)).clicked() {
                                shell.phone.send(Command::AnswerRequest {
                                    account: r.account,
                                    from: r.from.clone(),
                                    answer,
                                });
                            }
                        }
                    });
                });
        }
        ui.horizontal(|ui| {
            labeled_edit(
                ui,
                "Filter contacts",
                &mut self.contact_filter,
                "name or address",
                false,
            );
            if ui.button("Add contact").clicked() {
                self.add_contact = AddContact {
                    open: true,
                    ..Default::default()
                };
            }
        });
        if self.add_contact.open {
            self.add_contact_view(ui, snap, shell);
        }
        let needle = self.contact_filter.to_lowercase();
        let matches = |c: &&ContactView| {
            needle.is_empty()
                || c.address.to_lowercase().contains(&needle)
                || c.alias
                    .as_deref()
                    .is_some_and(|a| a.to_lowercase().contains(&needle))
        };
        let mut groups: BTreeMap<String, Vec<&ContactView>> = BTreeMap::new();
        for c in snap.contacts.iter().filter(matches) {
            groups
                .entry(c.group.clone().unwrap_or_else(|| "Contacts".into()))
                .or_default()
                .push(c);
        }
        // One flat list of rows (group headers included), shown virtually: only the
        // visible rows are laid out, so thousands of contacts stay smooth.
        let mut rows: Vec<Option<&ContactView>> = Vec::new();
        let mut headers = Vec::new();
        for (g, list) in &groups {
            headers.push((rows.len(), g.clone(), list.len()));
            rows.push(None);
            rows.extend(list.iter().map(|c| Some(*c)));
        }
        egui::ScrollArea::vertical()
            .id_salt("contacts")
            .auto_shrink([false, false])
            .show_rows(ui, ROW, rows.len(), |ui, range| {
                for i in range {
                    match rows[i] {
                        None => {
                            if let Some((_, g, n)) = headers.iter().find(|(at, ..)| *at == i) {
                                ui.strong(format!("{g} ({n})"));
                            }
                        }
                        Some(c) => self.contact_row(ui, snap, c, shell),
                    }
                }
            });
    }

    fn contact_row(
        &mut self,
        ui: &mut egui::Ui,
        snap: &Snapshot,
        c: &ContactView,
        shell: &mut Shell,
    ) {
        ui.horizontal(|ui| {
            let (words, colour) = presence_words(c.presence);
            crate::widgets::dot(ui, colour, words);
            let name = c.alias.clone().unwrap_or_else(|| c.address.clone());
            ui.label(&name).on_hover_text(&c.address);
            if c.subscription == Subscription::WaitingForAuthorization {
                ui.weak("waiting for authorization");
            }
            if ui.button(format!("Chat with {name}")).clicked() {
                shell.page = Page::Chat(c.account, c.address.clone());
            }
            let sip = snap
                .accounts
                .iter()
                .find(|a| a.config.protocol() == Protocol::Sip)
                .map(|a| a.config.id);
            let call = ui
                .add_enabled(sip.is_some(), egui::Button::new(format!("Call {name}")))
                .on_disabled_hover_text("Add a SIP account to call");
            if call.clicked() {
                shell.place_call(sip, format!("sip:{}", c.address));
            }
            for (label, video) in [
                (format!("Video call {name}"), crate::calls::camera(shell)),
                (
                    format!("Share screen with {name}"),
                    crate::calls::screen(shell),
                ),
            ] {
                let button = ui
                    .add_enabled(sip.is_some(), egui::Button::new(label))
                    .on_disabled_hover_text("Add a SIP account to call");
                if button.clicked() {
                    shell.place_call_with(sip, format!("sip:{}", c.address), Some(video));
                }
            }
        });
    }

    fn add_contact_view(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
        let chat_accounts: Vec<(AccountId, String)> = snap
            .accounts
            .iter()
            .filter(|a| a.config.protocol() == Protocol::Xmpp)
            .map(|a| (a.config.id, a.config.address.clone()))
            .collect();
        let groups: Vec<String> = {
            let mut g: Vec<String> = snap
                .contacts
                .iter()
                .filter_map(|c| c.group.clone())
                .collect();
            g.sort();
            g.dedup();
            g
        };
        let f = &mut self.add_contact;
        if f.account.is_none() {
            f.account = chat_accounts.first().map(|a| a.0);
        }
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.strong("Add a contact");
            if chat_accounts.is_empty() {
                ui.label("Add a chat account first.");
            }
            egui::ComboBox::from_label("Account")
                .selected_text(
                    chat_accounts
                        .iter()
                        .find(|a| Some(a.0) == f.account)
                        .map(|a| a.1.clone())
                        .unwrap_or_default(),
                )
                .show_ui(ui, |ui| {
                    for (id, addr) in &chat_accounts {
                        ui.selectable_value(&mut f.account, Some(*id), addr);
                    }
                });
            labeled_edit(
                ui,
                "Contact address",
                &mut f.address,
                "friend@example.org",
                false,
            );
            labeled_edit(ui, "Display name", &mut f.alias, "optional", false);
            ui.horizontal(|ui| {
                labeled_edit(ui, "Group", &mut f.group, "new or existing group", false);
                for g in &groups {
                    if ui.small_button(g).clicked() {
                        f.group = g.clone();
                    }
                }
            });
            if let Some(e) = &f.error {
                ui.colored_label(RED, e);
            }
            ui.horizontal(|ui| {
                if ui.button("Send request").clicked() {
                    match (f.account, f.address.trim()) {
                        (None, _) => f.error = Some("Choose an account".into()),
                        (_, a) if !a.contains('@') => {
                            f.error = Some("The address is user@domain".into())
                        }
                        (Some(account), address) => {
                            let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
                            shell.phone.send(Command::AddContact {
                                account,
                                address: address.to_owned(),
                                alias: opt(&f.alias),
                                group: opt(&f.group),
                            });
                            *f = AddContact::default();
                        }
                    }
                }
                if ui.button("Cancel").clicked() {
                    *f = AddContact::default();
                }
            });
        });
    }
}
