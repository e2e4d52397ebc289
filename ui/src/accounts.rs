//! Accounts: the list with each one's status in plain words, connect and disconnect,
//! and the forms to add SIP and XMPP accounts (an existing one, or a new one created on
//! the server).

use crate::app::{HushApp, labeled_edit};
use eframe::egui;
use hush_core::model::{AccountSettings, EncryptionPolicy, SipSettings, Transport, XmppSettings};
use hush_core::snapshot::AccountStatus;
use hush_core::{Command, NewAccount, Protocol, Secret, Snapshot};

/// The add-account form.
#[derive(Default)]
pub(crate) struct AddForm {
    pub(crate) open: bool,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) create_new: bool,
    pub(crate) address: String,
    pub(crate) password: String,
    pub(crate) server: String,
    pub(crate) proxy: String,
    pub(crate) transport: Transport,
    pub(crate) best_effort: bool,
    pub(crate) remember: bool,
    pub(crate) error: Option<String>,
}

pub(crate) fn status_words(s: &AccountStatus) -> (String, egui::Color32) {
    use crate::widgets::{AMBER, GREEN, GREY, RED};
    match s {
        AccountStatus::Offline => ("offline".into(), GREY),
        AccountStatus::Connecting => ("connecting…".into(), AMBER),
        AccountStatus::Retrying(e) => (format!("retrying: {e}"), AMBER),
        AccountStatus::Online => ("online".into(), GREEN),
        AccountStatus::Error(e) => (format!("error: {e}"), RED),
    }
}

impl HushApp {
    pub(crate) fn accounts_page(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        ui.heading("Accounts");
        if snap.accounts.is_empty() {
            ui.label("No accounts yet.");
        }
        egui::Grid::new("accounts").striped(true).show(ui, |ui| {
            for a in &snap.accounts {
                let proto = match a.config.protocol() {
                    Protocol::Sip => "SIP (calls)",
                    Protocol::Xmpp => "XMPP (chat)",
                };
                ui.label(proto);
                ui.label(&a.config.address);
                let (words, colour) = status_words(&a.status);
                if matches!(
                    a.status,
                    AccountStatus::Connecting | AccountStatus::Retrying(_)
                ) {
                    ui.horizontal(|ui| {
                        ui.add(egui::Spinner::new());
                        ui.colored_label(colour, words);
                    });
                } else {
                    ui.colored_label(colour, words);
                }
                let id = a.config.id;
                match a.status {
                    AccountStatus::Online
                    | AccountStatus::Connecting
                    | AccountStatus::Retrying(_) => {
                        if ui.button(format!("Disconnect {}", a.config.address)).clicked() {
                            self.phone.send(Command::Disconnect { account: id });
                        }
                    }
                    _ => {
                        let label = format!("Connect {}", a.config.address);
                        let can = a.config.remember_password;
                        let b = ui.add_enabled(can, egui::Button::new(label));
                        let b = b.on_disabled_hover_text(
                            "The password is not saved: connect from the command line, or remove and re-add the account with \"remember password\"",
                        );
                        if b.clicked() {
                            self.phone.send(Command::Connect {
                                account: id,
                                password: None,
                            });
                        }
                    }
                }
                if ui.button(format!("Remove {}", a.config.address)).clicked() {
                    self.phone.send(Command::RemoveAccount(id));
                }
                ui.end_row();
            }
        });
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui.button("Add a chat account (XMPP)").clicked() {
                self.add_form = AddForm {
                    open: true,
                    protocol: Some(Protocol::Xmpp),
                    remember: true,
                    ..Default::default()
                };
            }
            if ui.button("Add a calling account (SIP)").clicked() {
                self.add_form = AddForm {
                    open: true,
                    protocol: Some(Protocol::Sip),
                    remember: true,
                    ..Default::default()
                };
            }
        });
        if self.add_form.open {
            ui.separator();
            self.add_form_view(ui, snap);
        }
    }

    fn add_form_view(&mut self, ui: &mut egui::Ui, snap: &Snapshot) {
        let f = &mut self.add_form;
        let sip = f.protocol == Some(Protocol::Sip);
        ui.heading(if sip {
            "New SIP account"
        } else {
            "New XMPP account"
        });
        if !sip {
            ui.horizontal(|ui| {
                ui.radio_value(&mut f.create_new, false, "I have an account");
                ui.radio_value(
                    &mut f.create_new,
                    true,
                    "Create a new account on the server",
                );
            });
        }
        labeled_edit(ui, "Address", &mut f.address, "user@example.org", false);
        labeled_edit(ui, "Password", &mut f.password, "", true);
        if sip {
            labeled_edit(
                ui,
                "Outbound proxy (optional)",
                &mut f.proxy,
                "sip:proxy.example.org",
                false,
            );
            ui.horizontal(|ui| {
                ui.label("Transport");
                ui.radio_value(&mut f.transport, Transport::Udp, "UDP");
                ui.radio_value(&mut f.transport, Transport::Tcp, "TCP");
                ui.radio_value(&mut f.transport, Transport::Tls, "TLS");
            });
            ui.checkbox(
                &mut f.best_effort,
                "Allow unencrypted calls when the other side cannot encrypt (you will always be told)",
            );
        } else {
            labeled_edit(
                ui,
                "Server (optional, host:port)",
                &mut f.server,
                "found from the address",
                false,
            );
        }
        ui.checkbox(
            &mut f.remember,
            "Remember the password (sealed in your profile)",
        );
        if snap.locked && f.remember {
            ui.label("Unlock your profile first to remember passwords.");
        }
        if let Some(e) = &f.error {
            ui.colored_label(crate::widgets::RED, e);
        }
        ui.horizontal(|ui| {
            if ui.button("Save account").clicked() {
                match build(f) {
                    Ok(new) => {
                        let cmd = if !sip && f.create_new {
                            Command::RegisterXmpp(new)
                        } else {
                            Command::AddAccount(new)
                        };
                        self.phone.send(cmd);
                        *f = AddForm::default();
                    }
                    Err(e) => f.error = Some(e),
                }
            }
            if ui.button("Cancel").clicked() {
                *f = AddForm::default();
            }
        });
    }
}

fn build(f: &AddForm) -> Result<NewAccount, String> {
    let address = f.address.trim().to_owned();
    if !address.contains('@') {
        return Err("The address is user@domain".into());
    }
    if f.password.is_empty() {
        return Err("Enter the password".into());
    }
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let settings = match f.protocol {
        Some(Protocol::Sip) => AccountSettings::Sip(SipSettings {
            registrar: None,
            outbound_proxy: opt(&f.proxy),
            transport: f.transport,
            tls_ca_file: None,
            encryption: if f.best_effort {
                EncryptionPolicy::BestEffort
            } else {
                EncryptionPolicy::Mandatory
            },
        }),
        _ => AccountSettings::Xmpp(XmppSettings {
            server: opt(&f.server),
            ..Default::default()
        }),
    };
    Ok(NewAccount {
        address,
        display_name: None,
        password: Some(Secret::new(f.password.clone())),
        remember_password: f.remember,
        settings,
    })
}
