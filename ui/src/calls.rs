//! Calls: dial, the built-in echo test, one card per call with the SAS indicator, the
//! SAS comparison (pick the half you heard), mute/hold/keypad/hang up, and the
//! incoming-call prompt with the security policy spelled out.

use crate::app::Shell;
use crate::sas::{choices, halves};
use crate::widgets::labeled_edit;
use crate::widgets::{AMBER, RED, sas_indicator};
use eframe::egui;
use hush_core::command::{MediaChoice, SinkSpec, SourceSpec, VideoChoice, VideoSourceSpec};
use hush_core::model::EncryptionPolicy;
use hush_core::snapshot::{CallId, CallState, CallView, StreamKind};
use hush_core::{AccountId, CallSecurity, Command, Protocol, Snapshot};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

fn state_words(s: &CallState) -> String {
    match s {
        CallState::Calling => "Calling…".into(),
        CallState::Ringing => "Ringing…".into(),
        CallState::Incoming => "Incoming call".into(),
        CallState::Connected => "Connected".into(),
        CallState::OnHold => "On hold".into(),
        CallState::Ended(r) => format!("Ended: {r}"),
    }
}

/// The calls page's own state: what is being dialled and how each call is shown.
#[derive(Default)]
pub(crate) struct CallsPage {
    dial: String,
    keypad: Option<CallId>,
    pub(crate) muted: HashSet<CallId>,
    pub(crate) connected_since: HashMap<CallId, Instant>,
    /// Ended calls the user has cleared (the core keeps the last few with their reason).
    dismissed: HashSet<CallId>,
    /// The pictures of each video call on screen.
    video: HashMap<CallId, crate::video::CallTextures>,
}

/// The camera of a video call from the window: the one chosen in Settings (the
/// first camera found, else the test pattern).
pub(crate) fn camera(shell: &Shell) -> VideoChoice {
    VideoChoice {
        source: shell.camera.source.clone(),
        record: None,
    }
}

/// The test pattern: what the echo test's far end sends back.
fn pattern() -> VideoChoice {
    VideoChoice {
        source: VideoSourceSpec::Pattern,
        record: None,
    }
}

/// The screen the window shares.
pub(crate) fn screen(shell: &Shell) -> VideoChoice {
    VideoChoice {
        source: VideoSourceSpec::Screen(shell.screen.clone()),
        record: None,
    }
}

impl Shell {
    pub(crate) fn place_call(&mut self, account: Option<AccountId>, target: String) {
        self.place_call_with(account, target, None);
    }

    /// Places a call, with video if given.
    pub(crate) fn place_call_with(
        &mut self,
        account: Option<AccountId>,
        target: String,
        video: Option<VideoChoice>,
    ) {
        self.phone.send(Command::PlaceCall {
            account,
            target,
            audio: MediaChoice {
                video,
                ..self.audio.clone()
            },
            policy: None,
        });
        self.page = crate::app::Page::Calls;
    }

    /// Starts the echo test: a built-in answering peer on loopback, then a call to it.
    pub(crate) fn echo_test(&mut self) {
        self.echo_test_with(self.audio.clone());
    }

    /// The echo test with video: the far end echoes the voice and sends the test
    /// pattern back, so both pictures and the keyed video stream can be seen.
    pub(crate) fn video_test(&mut self) {
        let audio = MediaChoice {
            video: Some(camera(self)),
            ..self.audio.clone()
        };
        self.echo_test_with(audio);
    }

    /// The echo test sharing the screen: the far end watches it (and sends the test
    /// pattern back), and the sharing bar shows.
    pub(crate) fn share_test(&mut self) {
        let audio = MediaChoice {
            video: Some(screen(self)),
            ..self.audio.clone()
        };
        self.echo_test_with(audio);
    }

    /// The echo test with this microphone and speaker (and camera: then the far end
    /// sends pictures too).
    pub(crate) fn echo_test_with(&mut self, audio: MediaChoice) {
        let phone = self.phone.clone();
        let listen = Command::Listen {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            auto_answer: Some(hush_core::command::MediaChoice {
                source: hush_core::command::SourceSpec::Echo,
                sink: hush_core::command::SinkSpec::Null,
                video: audio.video.as_ref().map(|_| pattern()),
            }),
            policy: EncryptionPolicy::Mandatory,
        };
        // The core answers on its own thread; the window never blocks on it.
        std::thread::spawn(move || {
            if let Ok(hush_core::Reply::Listening(addr)) = phone.execute_blocking(listen) {
                phone.send(Command::PlaceCall {
                    account: None,
                    target: format!("echo@{addr}"),
                    audio,
                    policy: Some(EncryptionPolicy::Mandatory),
                });
            }
        });
        self.page = crate::app::Page::Calls;
    }
}

impl CallsPage {
    /// Some call shows the peer's pictures.
    pub(crate) fn showing_video(&self) -> bool {
        self.video
            .values()
            .any(crate::video::CallTextures::has_theirs)
    }

    pub(crate) fn show(&mut self, ui: &mut egui::Ui, snap: &Snapshot, shell: &mut Shell) {
        ui.heading("Calls");
        let sip = snap
            .accounts
            .iter()
            .find(|a| a.config.protocol() == Protocol::Sip)
            .map(|a| a.config.id);
        ui.horizontal(|ui| {
            labeled_edit(
                ui,
                "Call address",
                &mut self.dial,
                "sip:friend@example.org",
                false,
            );
            for (label, video) in [("Call", None), ("Video call", Some(camera(shell)))] {
                if ui.button(label).clicked() && !self.dial.trim().is_empty() {
                    let t = self.dial.trim().to_owned();
                    let direct = t.trim_start_matches("sip:").contains(':');
                    shell.place_call_with(if direct { None } else { sip }, t, video);
                }
            }
            if ui.button("Try a secure echo test").clicked() {
                shell.echo_test();
            }
            if ui.button("Try a secure video test").clicked() {
                shell.video_test();
            }
        });
        ui.separator();
        // The echo test's far end lives in this phone too; the user talks to it, not as it.
        let calls: Vec<CallView> = snap
            .calls
            .iter()
            .filter(|c| !c.automatic)
            .cloned()
            .collect();
        // Forget dismissals of calls the core no longer keeps.
        self.dismissed
            .retain(|id| snap.ended_calls.iter().any(|c| c.id == *id));
        let ended: Vec<CallView> = snap
            .ended_calls
            .iter()
            .filter(|c| !self.dismissed.contains(&c.id))
            .cloned()
            .collect();
        if calls.is_empty() && ended.is_empty() {
            ui.label("No calls.");
        }
        for c in calls.iter().rev() {
            self.call_card(ui, c, shell);
            ui.add_space(6.0);
        }
        for c in ended.iter().rev() {
            self.call_card(ui, c, shell);
            ui.add_space(6.0);
        }
        if !ended.is_empty() && ui.button("Clear ended calls").clicked() {
            self.dismissed.extend(ended.iter().map(|c| c.id));
        }
    }

    fn call_card(&mut self, ui: &mut egui::Ui, c: &CallView, shell: &mut Shell) {
        let ended = matches!(c.state, CallState::Ended(_));
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading(&c.peer);
                if !ended {
                    ui.label(state_words(&c.state));
                }
                if let Some(since) = self.connected_since.get(&c.id) {
                    let s = since.elapsed().as_secs();
                    ui.monospace(format!("{:02}:{:02}", s / 60, s % 60));
                    if !ended {
                        // The timer is the only thing that changes without an event.
                        ui.ctx()
                            .request_repaint_after(std::time::Duration::from_secs(1));
                    }
                }
            });
            if c.state == CallState::Incoming {
                let policy = match c.security {
                    CallSecurity::Cleartext => {
                        "This call may be unencrypted (the account allows it)."
                    }
                    _ => "This call will be encrypted: it is refused if the caller cannot encrypt.",
                };
                ui.label(policy);
                ui.horizontal(|ui| {
                    if ui.button("Answer").clicked() {
                        shell.phone.send(Command::Answer {
                            call: c.id,
                            audio: shell.audio.clone(),
                        });
                    }
                    if ui.button("Answer with video").clicked() {
                        shell.phone.send(Command::Answer {
                            call: c.id,
                            audio: MediaChoice {
                                video: Some(camera(shell)),
                                ..shell.audio.clone()
                            },
                        });
                    }
                    if ui.button("Decline").clicked() {
                        shell.phone.send(Command::Reject {
                            call: c.id,
                            busy: false,
                        });
                    }
                });
                return;
            }
            if let CallState::Ended(reason) = &c.state {
                // The reason in full, wrapped; no security state: nothing is live any more.
                // (The command line's advice on its own flags is not for the window.)
                let reason = reason
                    .split("; choose a file or tone instead")
                    .next()
                    .unwrap_or(reason);
                ui.add(egui::Label::new(format!("Ended: {reason}")).wrap());
                let echo = c.peer.trim_start_matches("sip:").starts_with("echo@");
                if echo && reason.contains("no usable audio input") {
                    ui.label("This computer has no microphone Hushphone can use.");
                    if ui.button("Try the echo test with a test tone").clicked() {
                        self.dismissed.insert(c.id);
                        let sink = shell.audio.sink.clone();
                        shell.echo_test_with(MediaChoice {
                            source: SourceSpec::Tone(440.0),
                            sink,
                            video: None,
                        });
                    }
                } else if echo && reason.contains("no usable audio output") {
                    ui.label("This computer has no speaker Hushphone can use.");
                    if ui
                        .button("Try the echo test with a test tone and no sound")
                        .clicked()
                    {
                        self.dismissed.insert(c.id);
                        shell.echo_test_with(MediaChoice {
                            source: SourceSpec::Tone(440.0),
                            sink: SinkSpec::Null,
                            video: None,
                        });
                    }
                }
                return;
            }
            sas_indicator(ui, &c.security);
            let video = c
                .streams
                .iter()
                .any(|s| matches!(s.kind, StreamKind::Video | StreamKind::Screen));
            if video && let Some(pictures) = shell.phone.pictures(c.id) {
                let their_screen =
                    !c.sharing_screen && c.streams.iter().any(|s| s.kind == StreamKind::Screen);
                self.video
                    .entry(c.id)
                    .or_default()
                    .show(ui, &pictures, c.id.0, their_screen);
            }
            if let Some(a) = &c.algorithms {
                ui.weak(format!("Algorithms: {a}"));
            }
            if let Some(s) = &c.stats {
                ui.weak(format!(
                    "Packets sent {} · received {} · lost {} · jitter {} ms{}",
                    s.packets_sent,
                    s.packets_received,
                    s.packets_lost,
                    s.jitter_ms,
                    s.rtt_ms
                        .map(|r| format!(" · round trip {r} ms"))
                        .unwrap_or_default()
                ));
            }
            if let CallSecurity::Secure {
                sas,
                verified: false,
            }
            | CallSecurity::CacheMismatch { sas }
            | CallSecurity::NewKey { sas } = &c.security
            {
                self.sas_compare(ui, c, sas, shell);
            }
            // Wrapped: a video call's row is wider than a narrow window.
            ui.horizontal_wrapped(|ui| {
                let on_hold = c.state == CallState::OnHold;
                if ui.button(if on_hold { "Resume" } else { "Hold" }).clicked() {
                    shell.phone.send(Command::Hold {
                        call: c.id,
                        on: !on_hold,
                    });
                }
                let muted = self.muted.contains(&c.id);
                if ui.button(if muted { "Unmute" } else { "Mute" }).clicked() {
                    if muted {
                        self.muted.remove(&c.id);
                    } else {
                        self.muted.insert(c.id);
                    }
                    shell.phone.send(Command::Mute {
                        call: c.id,
                        on: !muted,
                    });
                }
                let live = matches!(c.state, CallState::Connected | CallState::OnHold);
                if video {
                    // As the call has it (a refused change leaves it as it was).
                    let on = c.camera_on;
                    if ui
                        .button(if on { "Camera off" } else { "Camera on" })
                        .clicked()
                    {
                        shell.phone.send(Command::Camera {
                            call: c.id,
                            on: !on,
                        });
                    }
                    if ui.button("Stop video").clicked() {
                        shell.phone.send(Command::Video {
                            call: c.id,
                            on: false,
                            camera: None,
                        });
                    }
                } else if live && ui.button("Start video").clicked() {
                    shell.phone.send(Command::Video {
                        call: c.id,
                        on: true,
                        camera: Some(shell.camera.source.clone()),
                    });
                }
                if live {
                    let sharing = c.sharing_screen;
                    if ui
                        .button(if sharing {
                            "Stop sharing"
                        } else {
                            "Share screen"
                        })
                        .clicked()
                    {
                        shell.phone.send(Command::ShareScreen {
                            call: c.id,
                            on: !sharing,
                            screen: Some(shell.screen.clone()),
                        });
                    }
                }
                if ui.button("Keypad").clicked() {
                    self.keypad = if self.keypad == Some(c.id) {
                        None
                    } else {
                        Some(c.id)
                    };
                }
                if ui.add(egui::Button::new("Hang up").fill(RED)).clicked() {
                    shell.phone.send(Command::Hangup { call: c.id });
                }
            });
            if self.keypad == Some(c.id) {
                egui::Grid::new(("keypad", c.id.0)).show(ui, |ui| {
                    for row in ["123", "456", "789", "*0#"] {
                        for k in row.chars() {
                            if ui.button(format!("Key {k}")).clicked() {
                                shell.phone.send(Command::SendDtmf {
                                    call: c.id,
                                    keys: k.to_string(),
                                });
                            }
                        }
                        ui.end_row();
                    }
                });
            }
        });
    }

    /// The comparison: say our half, pick the half we heard among four.
    fn sas_compare(&mut self, ui: &mut egui::Ui, c: &CallView, sas: &str, shell: &mut Shell) {
        let (say, hear) = halves(sas, c.direction);
        ui.group(|ui| {
            ui.label(
                egui::RichText::new(format!("Read this to your peer: {}", say.to_uppercase()))
                    .strong()
                    .size(18.0),
            );
            ui.label("Which code did your peer read to you?");
            let seed = c.id.0.wrapping_mul(31).wrapping_add(
                sas.bytes()
                    .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b))),
            );
            ui.horizontal(|ui| {
                for choice in choices(&hear, seed) {
                    if ui
                        .button(format!("They said {}", choice.to_uppercase()))
                        .clicked()
                    {
                        if choice == hear {
                            shell.phone.send(Command::SetSasVerified {
                                call: c.id,
                                verified: true,
                            });
                        } else {
                            shell.phone.send(Command::SasMismatch { call: c.id });
                        }
                    }
                }
                if ui.button("None of these").clicked() {
                    shell.phone.send(Command::SasMismatch { call: c.id });
                }
            });
            ui.colored_label(
                AMBER,
                "A wrong code means someone may be listening in: the call will be ended.",
            );
        });
    }
}
