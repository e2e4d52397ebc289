//! Accounts: the list with each one's status in plain words, connect and disconnect,
//! and the forms to add SIP and XMPP accounts (an existing one, or a new one created on
//! the server).

use crate::app::Shell;
use crate::background::{self, Slot};
use crate::widgets::labeled_edit;
use eframe::egui;
use hush_core::model::{AccountSettings, EncryptionPolicy, SipSettings, Transport, XmppSettings};
use hush_core::snapshot::AccountStatus;
use hush_core::{Command, NewAccount, Protocol, Secret, Snapshot};

/// Changing an XMPP account's password on its server.
pub(crate) struct PasswordForm {
    account: hush_core::AccountId,
    address: String,
    /// The password is not saved, so the server needs the current one.
    needs_old: bool,
    old: String,
    new: String,
    repeat: String,
    error: Option<String>,
    /// Set by the worker thread when the server has answered.
    outcome: Slot<Result<(), String>>,
    busy: bool,
    changed: bool,
}

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
    pub(crate) registrar: String,
    pub(crate) tls_ca: String,
    pub(crate) pin_cert: String,
    pub(crate) socks5: String,
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

/// The accounts page's own state: its forms.
#[derive(Default)]
pub(crate) struct AccountsPage {
    add_form: AddForm,
    password_form: Option<PasswordForm>,
}

impl AccountsPage {
    pub(crate) fn show(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
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
                            shell.phone.send(Command::Disconnect { account: id });
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
                            shell.phone.send(Command::Connect {
                                account: id,
                                password: None,
                            });
                        }
                    }
                }
                if a.config.protocol() == Protocol::Xmpp
                    && ui
                        .button(format!("Change password of {}", a.config.address))
                        .clicked()
                {
                    self.password_form = Some(PasswordForm {
                        account: id,
                        address: a.config.address.clone(),
                        needs_old: !a.config.remember_password,
                        old: String::new(),
                        new: String::new(),
                        repeat: String::new(),
                        error: None,
                        outcome: Slot::default(),
                        busy: false,
                        changed: false,
                    });
                }
                if ui.button(format!("Remove {}", a.config.address)).clicked() {
                    shell.phone.send(Command::RemoveAccount(id));
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
            self.add_form_view(ui, snap, shell);
        }
        if self.password_form.is_some() {
            ui.separator();
            self.password_form_view(ui, shell);
        }
    }

    fn password_form_view(&mut self, ui: &mut egui::Ui, shell: &mut Shell) {
        let Some(f) = &mut self.password_form else {
            return;
        };
        ui.heading(format!("Change the password of {}", f.address));
        ui.label("The server changes it at once; other devices must then use the new one.");
        if f.needs_old {
            labeled_edit(ui, "Current password", &mut f.old, "", true);
        }
        labeled_edit(ui, "New password", &mut f.new, "", true);
        labeled_edit(ui, "Repeat the new password", &mut f.repeat, "", true);
        let done = background::take(&f.outcome);
        if let Some(result) = done {
            f.busy = false;
            match result {
                Ok(()) => {
                    f.changed = true;
                    f.new.clear();
                    f.repeat.clear();
                    f.old.clear();
                }
                Err(e) => f.error = Some(e),
            }
        }
        if f.busy {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label("Changing the password on the server…");
            });
        } else if f.changed {
            ui.colored_label(crate::widgets::GREEN, "Password changed on the server.");
        }
        if let Some(e) = &f.error {
            ui.colored_label(crate::widgets::RED, e);
        }
        let mut close = false;
        ui.horizontal(|ui| {
            let go = ui.add_enabled(!f.busy, egui::Button::new("Change password"));
            if go.clicked() {
                f.error = if f.new.is_empty() {
                    Some("Enter the new password".into())
                } else if f.new != f.repeat {
                    Some("The two new passwords differ".into())
                } else if f.needs_old && f.old.is_empty() {
                    Some("Enter the current password".into())
                } else {
                    None
                };
                if f.error.is_none() {
                    f.busy = true;
                    f.changed = false;
                    let cmd = Command::ChangeXmppPassword {
                        account: f.account,
                        old: f.needs_old.then(|| Secret::new(f.old.clone())),
                        new: Secret::new(f.new.clone()),
                    };
                    let phone = shell.phone.clone();
                    background::run(ui.ctx(), &f.outcome, move || {
                        phone
                            .execute_blocking(cmd)
                            .map(|_| ())
                            .map_err(|e| format!("The password was not changed: {e}"))
                    });
                }
            }
            if ui.button("Close").clicked() {
                close = true;
            }
        });
        if close {
            self.password_form = None;
        }
    }

    fn add_form_view(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
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
                "Registrar (optional)",
                &mut f.registrar,
                "sip:example.org (found from the address)",
                false,
            );
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
            if f.transport == Transport::Tls {
                labeled_edit(
                    ui,
                    "Also trust (PEM file, optional)",
                    &mut f.tls_ca,
                    "a self-hosted server's certificate or your CA",
                    false,
                );
            }
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
            labeled_edit(
                ui,
                "Trust certificate (SHA-256, optional)",
                &mut f.pin_cert,
                "AB:CD:… of a self-hosted server",
                false,
            );
            labeled_edit(
                ui,
                "SOCKS5 proxy (optional)",
                &mut f.socks5,
                "127.0.0.1:9050 for Tor",
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
                        shell.phone.send(cmd);
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
            registrar: opt(&f.registrar),
            outbound_proxy: opt(&f.proxy),
            transport: f.transport,
            tls_ca_file: match opt(&f.tls_ca) {
                Some(p) if f.transport == Transport::Tls => {
                    let path = std::path::Path::new(&p);
                    if !path.is_file() {
                        return Err(format!("There is no file {p}"));
                    }
                    Some(
                        std::fs::canonicalize(path)
                            .map(|c| c.display().to_string())
                            .unwrap_or(p),
                    )
                }
                _ => None,
            },
            encryption: if f.best_effort {
                EncryptionPolicy::BestEffort
            } else {
                EncryptionPolicy::Mandatory
            },
            realm: None,
        }),
        _ => AccountSettings::Xmpp(XmppSettings {
            server: opt(&f.server),
            pinned_cert_sha256: opt(&f.pin_cert).map(|p| fingerprint(&p)).transpose()?,
            socks5_proxy: opt(&f.socks5).map(|p| host_port(&p)).transpose()?,
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

/// A SHA-256 fingerprint as pasted (any case, with or without colons or spaces), in
/// the `AB:CD:…` form the rest of the app shows.
fn fingerprint(text: &str) -> Result<String, String> {
    let hex: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_uppercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("A certificate fingerprint is 64 hex digits (SHA-256)".into());
    }
    Ok(hex
        .as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect::<Vec<_>>()
        .join(":"))
}

/// `host:port` with a port that is a number.
fn host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(text.to_owned())
        }
        _ => Err(format!("{text:?} is not host:port (Tor: 127.0.0.1:9050)")),
    }
}
