//! Settings: audio, camera, private-chat keys and fingerprints, call verification, history and
//! the master password.

use crate::app::Shell;
use crate::background::{self, Slot};
use crate::widgets::labeled_edit;
use crate::widgets::{GREEN, RED};
use eframe::egui;
use hush_core::command::{MediaChoice, SinkSpec, SourceSpec};
use hush_core::model::{AccountSettings, OtrPolicySetting};
use hush_core::security::PeerKey;
use hush_core::{Command, Protocol, Secret, Snapshot};

/// Input and output device names.
type DeviceLists = (Vec<String>, Vec<String>);

/// Form state of the settings page.
#[derive(Default)]
pub(crate) struct SettingsPage {
    pub(crate) confirm_erase: bool,
    pub(crate) old_password: String,
    pub(crate) new_password: String,
    pub(crate) import_keys: String,
    pub(crate) import_fingerprints: String,
    /// The running microphone check's meter.
    pub(crate) meter: Option<hush_core::command::LevelMeter>,
    pub(crate) check_error: Option<String>,
    /// Verified keys of call peers, once read from the ZRTP cache.
    verified: Slot<Vec<PeerKey>>,
    verified_asked: bool,
    /// The sound cards' input and output devices, once listed.
    devices: Slot<DeviceLists>,
    devices_asked: bool,
    /// Accounts whose new OTR key is being generated, and the last failure.
    generating: std::sync::Arc<std::sync::Mutex<(Vec<hush_core::AccountId>, Option<String>)>>,
    /// Where the worker thread puts the core's answer to a check request.
    check_reply: Slot<Result<hush_core::command::LevelMeter, String>>,
}

impl SettingsPage {
    pub(crate) fn show(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
        egui::ScrollArea::vertical()
            .id_salt("settings")
            .show(ui, |ui| {
                self.audio_settings(ui, shell);
                ui.separator();
                shell.camera.settings(ui);
                ui.separator();
                self.otr_settings(ui, snap, shell);
                ui.separator();
                self.call_settings(ui, shell);
                ui.separator();
                self.history_settings(ui, snap, shell);
                ui.separator();
                self.password_settings(ui, snap, shell);
            });
    }

    fn audio_settings(&mut self, ui: &mut egui::Ui, shell: &mut Shell) {
        ui.heading("Audio");
        let mut choice = match shell.audio.source {
            SourceSpec::Device | SourceSpec::NamedDevice(_) => 0,
            SourceSpec::Tone(_) => 1,
            _ => 2,
        };
        let before = choice;
        ui.horizontal(|ui| {
            ui.radio_value(&mut choice, 0, "Microphone and speaker (system default)");
            ui.radio_value(&mut choice, 1, "Test tone (440 Hz), no speaker");
            ui.radio_value(&mut choice, 2, "Silence");
        });
        if choice != before {
            shell.audio = match choice {
                0 => MediaChoice {
                    source: SourceSpec::Device,
                    sink: SinkSpec::Device,
                    video: None,
                },
                1 => MediaChoice {
                    source: SourceSpec::Tone(440.0),
                    sink: SinkSpec::Null,
                    video: None,
                },
                _ => MediaChoice::default(),
            };
            self.stop_audio_check(shell);
        }
        if choice == 0 {
            self.device_choice(ui, shell);
        }
        let answer = background::take(&self.check_reply);
        match answer {
            Some(Ok(meter)) => {
                self.meter = Some(meter);
                self.check_error = None;
            }
            Some(Err(e)) => {
                self.meter = None;
                self.check_error = Some(e);
            }
            None => {}
        }
        ui.horizontal(|ui| {
            if ui.button("Check the microphone").clicked() {
                self.start_audio_check(ui.ctx(), false, shell);
            }
            if ui.button("Play a test tone").clicked() {
                self.start_audio_check(ui.ctx(), true, shell);
            }
            if self.meter.is_some() && ui.button("Stop the check").clicked() {
                self.stop_audio_check(shell);
            }
        });
        if let Some(m) = &self.meter {
            let level = m.level();
            let bar = egui::ProgressBar::new(level)
                .desired_width(300.0)
                .text(format!("Microphone level {:.0} %", level * 100.0));
            ui.add(bar);
            // The meter moves without core events: redraw ten times a second, only
            // while it is shown.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(100));
        }
        if let Some(e) = &self.check_error {
            ui.colored_label(crate::widgets::RED, e);
        }
    }

    /// Which microphone and speaker, among those the system lists.
    fn device_choice(&mut self, ui: &mut egui::Ui, shell: &mut Shell) {
        if !self.devices_asked {
            self.devices_asked = true;
            let phone = shell.phone.clone();
            background::run(ui.ctx(), &self.devices, move || {
                match phone.execute_blocking(Command::ListAudioDevices) {
                    Ok(hush_core::Reply::AudioDevices { inputs, outputs }) => (inputs, outputs),
                    _ => DeviceLists::default(),
                }
            });
        }
        let listed = background::peek(&self.devices);
        let Some((inputs, outputs)) = listed else {
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label("Looking for sound cards…");
            });
            return;
        };
        if inputs.is_empty() && outputs.is_empty() {
            ui.label("No sound card found. Calls can use the test tone or silence instead.");
            return;
        }
        let mut source = shell.audio.source.clone();
        let named = match &source {
            SourceSpec::NamedDevice(n) => Some(n.as_str()),
            _ => None,
        };
        if let Some(choice) = device_combo(ui, "Microphone", named, &inputs) {
            source = choice.map_or(SourceSpec::Device, SourceSpec::NamedDevice);
        }
        let mut sink = shell.audio.sink.clone();
        let named = match &sink {
            SinkSpec::NamedDevice(n) => Some(n.as_str()),
            _ => None,
        };
        if let Some(choice) = device_combo(ui, "Speaker", named, &outputs) {
            sink = choice.map_or(SinkSpec::Device, SinkSpec::NamedDevice);
        }
        if source != shell.audio.source || sink != shell.audio.sink {
            shell.audio = MediaChoice {
                source,
                sink,
                video: None,
            };
            self.stop_audio_check(shell);
        }
    }

    fn start_audio_check(&mut self, ctx: &egui::Context, tone: bool, shell: &mut Shell) {
        let phone = shell.phone.clone();
        let cmd = Command::CheckAudio {
            audio: shell.audio.clone(),
            tone,
        };
        background::run(ctx, &self.check_reply, move || {
            match phone.execute_blocking(cmd) {
                Ok(hush_core::Reply::AudioMeter(m)) => Ok(m),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(format!("Audio check failed: {e}")),
            }
        });
    }

    /// Stops the microphone check, if one runs (leaving the page, another choice).
    pub(crate) fn stop_audio_check(&mut self, shell: &mut Shell) {
        if self.meter.take().is_some() {
            shell.phone.send(Command::StopAudioCheck);
        }
    }

    /// Key generation is slow: run it off the window's thread and show progress.
    fn generate_key(
        &mut self,
        ctx: &egui::Context,
        account: hush_core::AccountId,
        shell: &mut Shell,
    ) {
        let state = self.generating.clone();
        if let Ok(mut g) = state.lock() {
            g.0.push(account);
            g.1 = None;
        }
        let phone = shell.phone.clone();
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let r = phone.execute_blocking(Command::OtrGenerateKey { account });
            if let Ok(mut g) = state.lock() {
                g.0.retain(|a| *a != account);
                g.1 = r.err().map(|e| format!("The key was not generated: {e}"));
            }
            ctx.request_repaint();
        });
    }

    fn otr_settings(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
        ui.heading("Private chat (OTR)");
        let failed = self.generating.lock().ok().and_then(|g| g.1.clone());
        if let Some(e) = failed {
            ui.colored_label(crate::widgets::RED, e);
        }
        for a in snap
            .accounts
            .iter()
            .filter(|a| a.config.protocol() == Protocol::Xmpp)
        {
            let id = a.config.id;
            ui.horizontal(|ui| {
                ui.strong(&a.config.address);
                match snap.otr_keys.iter().find(|k| k.account == id) {
                    Some(k) => {
                        ui.monospace(&k.fingerprint);
                    }
                    None => {
                        ui.label("no key yet (made when the account connects)");
                    }
                }
                let busy = self
                    .generating
                    .lock()
                    .map(|g| g.0.contains(&id))
                    .unwrap_or(false);
                if busy {
                    ui.add(egui::Spinner::new());
                    ui.label("Generating a new key (this can take a few seconds)…");
                } else if ui
                    .button(format!("Generate a new key for {}", a.config.address))
                    .on_hover_text(
                        "Your buddies will see a new fingerprint and must verify you again",
                    )
                    .clicked()
                {
                    self.generate_key(ui.ctx(), id, shell);
                }
            });
            if let AccountSettings::Xmpp(x) = &a.config.settings {
                let mut p = x.otr_policy;
                ui.horizontal(|ui| {
                    ui.label("Policy:");
                    ui.radio_value(&mut p, OtrPolicySetting::Manual, "only when I start it");
                    ui.radio_value(
                        &mut p,
                        OtrPolicySetting::Opportunistic,
                        "when the other side can",
                    );
                    ui.radio_value(
                        &mut p,
                        OtrPolicySetting::Require,
                        "always (never send plaintext)",
                    );
                });
                if p != x.otr_policy {
                    shell.phone.send(Command::OtrSetPolicy {
                        account: id,
                        peer: None,
                        policy: Some(p),
                    });
                }
            }
        }
        if snap.known_fingerprints.is_empty() {
            ui.label("Known fingerprints: none yet (they appear after a private chat).");
        } else {
            ui.label("Known fingerprints:");
        }
        egui::Grid::new("known").striped(true).show(ui, |ui| {
            for k in &snap.known_fingerprints {
                ui.label(&k.peer);
                ui.monospace(&k.fingerprint);
                if k.verified {
                    ui.colored_label(GREEN, "verified");
                } else {
                    ui.label("not verified");
                }
                let label = if k.verified { "Unverify" } else { "Verify" };
                if ui.button(format!("{label} {}", k.peer)).clicked() {
                    shell.phone.send(Command::OtrTrust {
                        account: k.account,
                        peer: k.peer.clone(),
                        fingerprint: k.fingerprint.clone(),
                        verified: !k.verified,
                    });
                }
                if ui.button(format!("Forget {}", k.peer)).clicked() {
                    shell.phone.send(Command::OtrForget {
                        account: k.account,
                        peer: k.peer.clone(),
                        fingerprint: k.fingerprint.clone(),
                    });
                }
                ui.end_row();
            }
        });
        ui.label("Import from Pidgin:");
        let f = &mut *self;
        labeled_edit(
            ui,
            "otr.private_key file",
            &mut f.import_keys,
            "~/.purple/otr.private_key",
            false,
        );
        labeled_edit(
            ui,
            "otr.fingerprints file",
            &mut f.import_fingerprints,
            "~/.purple/otr.fingerprints",
            false,
        );
        if ui.button("Import").clicked() {
            let read = |p: &str| -> Result<Option<String>, String> {
                if p.trim().is_empty() {
                    return Ok(None);
                }
                std::fs::read_to_string(p.trim())
                    .map(Some)
                    .map_err(|e| format!("{}: {e}", p.trim()))
            };
            match (read(&f.import_keys), read(&f.import_fingerprints)) {
                (Ok(k), Ok(fp)) if k.is_some() || fp.is_some() => {
                    shell.phone.send(Command::OtrImport {
                        keys: k.map(Secret::new),
                        fingerprints: fp,
                    });
                }
                (Err(e), _) | (_, Err(e)) => shell.notice = Some(e),
                _ => shell.notice = Some("Give the path of at least one file".into()),
            }
        }
    }

    fn call_settings(&mut self, ui: &mut egui::Ui, shell: &mut Shell) {
        ui.heading("Calls");
        ui.label(
            "A peer whose code you compared stays verified for later calls with the same key (the \
             device they called from), until you withdraw it here. A new key for a verified peer \
             is shown in violet until you compare the code again.",
        );
        let Some(peers) = background::peek(&self.verified) else {
            if !self.verified_asked {
                self.verified_asked = true;
                self.read_verified(ui.ctx(), None, shell);
            }
            ui.horizontal(|ui| {
                ui.add(egui::Spinner::new());
                ui.label("Reading verified peers…");
            });
            return;
        };
        if peers.is_empty() {
            ui.label("No verified peers yet.");
        }
        let mut reset = None;
        egui::Grid::new("verified-peers").show(ui, |ui| {
            for p in &peers {
                ui.colored_label(crate::widgets::GREEN, format!("verified: {}", p.peer));
                ui.monospace(format!("key {}", grouped(&p.key)));
                // Short on screen; the accessible name says which key it withdraws.
                let name = format!("Reset verification of {} (key {})", p.peer, grouped(&p.key));
                let b = ui.button("Reset").on_hover_text(&name);
                b.widget_info(move || {
                    egui::WidgetInfo::labeled(egui::Role::Button, true, name.clone())
                });
                if b.clicked() {
                    reset = Some(p.clone());
                }
                ui.end_row();
            }
        });
        if let Some(peer) = reset {
            self.read_verified(ui.ctx(), Some(peer), shell);
        }
    }

    /// Reads the verified call peer keys from the core, first withdrawing `reset`.
    fn read_verified(&self, ctx: &egui::Context, reset: Option<PeerKey>, shell: &mut Shell) {
        let phone = shell.phone.clone();
        background::run(ctx, &self.verified, move || {
            if let Some(k) = reset {
                let _ = phone.execute_blocking(Command::SetPeerVerified {
                    peer: k.peer,
                    key: k.key,
                    verified: false,
                });
            }
            match phone.execute_blocking(Command::ListVerifiedPeers) {
                Ok(hush_core::Reply::VerifiedPeers(p)) => p,
                _ => Vec::new(),
            }
        });
    }

    /// Forgets lists read for the settings page, so the next visit reads them afresh.
    pub(crate) fn leave_settings(&mut self, shell: &mut Shell) {
        self.stop_audio_check(shell);
        if self.verified_asked {
            self.verified_asked = false;
            if let Ok(mut v) = self.verified.lock() {
                *v = None;
            }
        }
    }

    fn history_settings(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
        ui.heading("History");
        let mut on = snap.history_default;
        if ui
            .checkbox(
                &mut on,
                "Keep chat and call history (sealed in your profile)",
            )
            .changed()
        {
            shell.phone.send(Command::SetHistoryDefault(on));
        }
        if self.confirm_erase {
            ui.horizontal(|ui| {
                ui.colored_label(RED, "Erase all history for good?");
                if ui.button("Yes, erase everything").clicked() {
                    shell.phone.send(Command::EraseHistory);
                    self.confirm_erase = false;
                }
                if ui.button("Keep it").clicked() {
                    self.confirm_erase = false;
                }
            });
        } else if ui.button("Erase all history").clicked() {
            self.confirm_erase = true;
        }
    }

    fn password_settings(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
        ui.heading("Master password");
        ui.label("A master password encrypts your saved passwords and keys; without it, anyone who can read your files can use them.");
        let f = &mut *self;
        if snap.master_password_set {
            labeled_edit(ui, "Current master password", &mut f.old_password, "", true);
        }
        labeled_edit(ui, "New master password", &mut f.new_password, "", true);
        ui.horizontal(|ui| {
            let label = if snap.master_password_set {
                "Change master password"
            } else {
                "Set master password"
            };
            if ui.button(label).clicked() {
                let new = Secret::new(std::mem::take(&mut f.new_password));
                let cmd = if snap.master_password_set {
                    Command::ChangeMasterPassword {
                        old: Secret::new(std::mem::take(&mut f.old_password)),
                        new,
                    }
                } else {
                    Command::SetMasterPassword { new }
                };
                shell.phone.send(cmd);
            }
            if snap.master_password_set
                && ui
                    .button("Remove master password")
                    .on_hover_text("Your saved passwords and keys will then be protected only by file permissions")
                    .clicked()
            {
                shell.phone.send(Command::RemoveMasterPassword {
                    current: Secret::new(std::mem::take(&mut f.old_password)),
                });
            }
        });
    }
}

/// A device list with "System default" first. Returns the new choice when the user
/// picks one: `None` for the default, or a device's name.
fn device_combo(
    ui: &mut egui::Ui,
    label: &str,
    current: Option<&str>,
    names: &[String],
) -> Option<Option<String>> {
    let mut picked = None;
    egui::ComboBox::from_label(label)
        .selected_text(current.unwrap_or("System default"))
        .show_ui(ui, |ui| {
            if ui
                .selectable_label(current.is_none(), "System default")
                .clicked()
            {
                picked = Some(None);
            }
            for n in names {
                if ui.selectable_label(current == Some(n), n).clicked() {
                    picked = Some(Some(n.clone()));
                }
            }
        });
    picked
}

/// A key id in groups of eight hex digits, easier to read out and compare.
fn grouped(key: &str) -> String {
    key.as_bytes()
        .chunks(8)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
