//! The call commands of the CLI: `call`, `answer`, `echo-test`, `sas-verified`. They
//! drive the core like the window does and print each event as one line.

use super::error::CliError;
use super::output::Out;
use super::records::call_event as print;
use super::secrets::Secrets;
use super::session::{connect, unlock_if_needed};
use clap::Args;
use hush_core::command::{
    MediaChoice, ScreenSpec, SinkSpec, SourceSpec, VideoChoice, VideoSourceSpec,
};
use hush_core::model::EncryptionPolicy;
use hush_core::snapshot::{CallId, CallState};
use hush_core::{CallSecurity, Command, CoreError, Event, Phone, Reply};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Where call audio comes from and goes to.
#[derive(Args, Debug, Clone)]
pub(crate) struct AudioArgs {
    /// Play this WAV file as the microphone (looped).
    #[arg(long, value_name = "WAV", conflicts_with = "tone")]
    play: Option<PathBuf>,
    /// Send a sine tone at this frequency (Hz) as the microphone.
    #[arg(long, value_name = "HZ")]
    tone: Option<f64>,
    /// Record what we hear to this WAV file.
    #[arg(long, value_name = "WAV")]
    record: Option<PathBuf>,
    /// Use this microphone instead of the system default (names: `hushphone audio-devices`).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["play", "tone"])]
    input_device: Option<String>,
    /// Use this speaker instead of the system default.
    #[arg(long, value_name = "NAME", conflicts_with = "record")]
    output_device: Option<String>,
    /// Offer (or accept) video too.
    #[arg(long)]
    video: bool,
    /// Where our pictures come from: `pattern` (a moving test pattern, the default),
    /// `camera` (the first camera found), a camera's device (`/dev/video0`; list them
    /// with `hushphone cameras`) or a Y4M file (looped).
    #[arg(
        long,
        value_name = "pattern|camera|/dev/videoN|FILE.y4m",
        requires = "video"
    )]
    video_source: Option<String>,
    /// Record the peer's pictures to this Y4M file.
    #[arg(long, value_name = "FILE.y4m")]
    video_record: Option<PathBuf>,
    /// Share the screen as the call's video (X11, or the desktop portal on Wayland; the
    /// other side sees it as a screen).
    #[arg(long, conflicts_with_all = ["video", "video_source"])]
    share_screen: bool,
    /// Which screen: an X11 display and optionally one monitor (`:0`, `:0.1`), or
    /// `portal` (the desktop asks what to share); the default is the portal in a
    /// Wayland session, else `$DISPLAY`, whole.
    #[arg(
        long,
        value_name = ":DISPLAY[.MONITOR]|portal",
        requires = "share_screen"
    )]
    screen: Option<String>,
    /// Scale the shared screen down to fit this size.
    #[arg(
        long,
        value_name = "WxH",
        default_value = "1280x720",
        requires = "share_screen"
    )]
    max_size: String,
    /// Pictures a second at most while the screen changes (a still screen sends two).
    #[arg(long, value_name = "FPS", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(1..=30), requires = "share_screen")]
    screen_fps: u32,
}

impl AudioArgs {
    /// Files and tones as given; the sound card for whatever is not given, checked now so
    /// a machine without one gets a clear message before any call is placed.
    fn choice(&self) -> Result<MediaChoice, CliError> {
        let source = match (&self.play, self.tone) {
            (Some(p), _) => SourceSpec::Wav(p.clone()),
            (None, Some(f)) => SourceSpec::Tone(f),
            (None, None) => {
                hush_media::audio::Microphone::open_named(8000, self.input_device.as_deref())
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                match &self.input_device {
                    Some(n) => SourceSpec::NamedDevice(n.clone()),
                    None => SourceSpec::Device,
                }
            }
        };
        let sink = match &self.record {
            Some(p) => SinkSpec::Wav(p.clone()),
            None if (self.play.is_some() || self.tone.is_some())
                && self.output_device.is_none() =>
            {
                SinkSpec::Null
            }
            None => {
                hush_media::audio::Speaker::open_named(8000, self.output_device.as_deref())
                    .map_err(|e| CliError::Usage(e.to_string()))?;
                match &self.output_device {
                    Some(n) => SinkSpec::NamedDevice(n.clone()),
                    None => SinkSpec::Device,
                }
            }
        };
        Ok(MediaChoice {
            source,
            sink,
            video: self.video_choice()?,
        })
    }

    fn video_choice(&self) -> Result<Option<VideoChoice>, CliError> {
        if self.share_screen {
            return Ok(Some(VideoChoice {
                source: VideoSourceSpec::Screen(self.screen_spec()?),
                record: self.video_record.clone(),
            }));
        }
        if !self.video {
            if self.video_record.is_some() {
                return Err(CliError::Usage(
                    "--video-record needs --video or --share-screen".into(),
                ));
            }
            return Ok(None);
        }
        let source = match self.video_source.as_deref() {
            None | Some("pattern") => VideoSourceSpec::Pattern,
            Some("camera") => {
                let first = hush_media::camera::list_cameras().into_iter().next();
                let camera = first.ok_or_else(|| {
                    CliError::Usage(
                        "no camera found (give --video-source pattern or a .y4m file)".into(),
                    )
                })?;
                VideoSourceSpec::Camera(camera.path)
            }
            Some(file) => {
                use std::os::unix::fs::FileTypeExt;
                let path = PathBuf::from(file);
                let meta = std::fs::metadata(&path).map_err(|e| {
                    CliError::Usage(format!(
                        "{file}: {e} (give `pattern`, `camera`, a camera's device or a .y4m file)"
                    ))
                })?;
                if meta.file_type().is_char_device() {
                    // Checked now, so a device that is no camera we can read is said
                    // before any call.
                    hush_media::camera::describe(&path)
                        .map_err(|e| CliError::Usage(e.to_string()))?;
                    VideoSourceSpec::Camera(path)
                } else if meta.is_file() {
                    // Read now, so a file that is not Y4M is said before any call.
                    let opened = std::fs::File::open(&path)
                        .map_err(|e| CliError::Usage(format!("{file}: {e}")))?;
                    hush_media::video::Y4mReader::new(std::io::BufReader::new(opened), true)
                        .map_err(|e| CliError::Usage(format!("{file}: {e}")))?;
                    VideoSourceSpec::File(path)
                } else {
                    return Err(CliError::Usage(format!(
                        "{file}: not a file (give `pattern` or a .y4m file)"
                    )));
                }
            }
        };
        Ok(Some(VideoChoice {
            source,
            record: self.video_record.clone(),
        }))
    }
}

impl AudioArgs {
    /// `--screen :D[.M]` and `--max-size WxH`, checked now.
    fn screen_spec(&self) -> Result<ScreenSpec, CliError> {
        let (display, monitor) = match self.screen.as_deref() {
            None | Some("portal") => (None, None),
            Some(s) => {
                let bad = || {
                    CliError::Usage(format!(
                        "--screen {s}: give an X11 display and optionally a monitor, like :0 \
                         or :0.1, or `portal` for the desktop's choice"
                    ))
                };
                let rest = s.strip_prefix(':').ok_or_else(bad)?;
                let (d, m) = match rest.split_once('.') {
                    Some((d, m)) => (d, Some(m.parse::<usize>().map_err(|_| bad())?)),
                    None => (rest, None),
                };
                if d.starts_with('+') {
                    return Err(bad());
                }
                d.parse::<u16>().map_err(|_| bad())?;
                (Some(format!(":{d}")), m)
            }
        };
        let max_size = self
            .max_size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|&(w, h)| (16..=3840).contains(&w) && (16..=2160).contains(&h))
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--max-size {}: give WIDTHxHEIGHT between 16x16 and 3840x2160",
                    self.max_size
                ))
            })?;
        Ok(ScreenSpec {
            display,
            portal: self.screen.as_deref() == Some("portal"),
            monitor,
            max_size,
            fps: self.screen_fps,
        })
    }
}

#[derive(Args, Debug)]
pub(crate) struct CallArgs {
    /// Who: `user@host[:port]` directly, or an address at the account's server.
    target: String,
    /// Call through this account (id or address) instead of directly.
    #[arg(long)]
    account: Option<String>,
    #[command(flatten)]
    audio: AudioArgs,
    /// Hang up this many seconds after the call connects.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Allow the call to continue unencrypted if the peer cannot do ZRTP.
    #[arg(long)]
    best_effort: bool,
    /// Send these DTMF keys once the call is secure.
    #[arg(long)]
    dtmf: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct AnswerArgs {
    /// Wait for calls to this account (id or address).
    #[arg(long, conflicts_with = "listen")]
    account: Option<String>,
    /// Wait for direct calls on this address.
    #[arg(long, default_value = "0.0.0.0:5060")]
    listen: SocketAddr,
    /// Answer without asking.
    #[arg(long)]
    auto: bool,
    #[command(flatten)]
    audio: AudioArgs,
    /// Hang up this many seconds after answering.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Handle this many calls, then exit.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Allow unencrypted calls from peers without ZRTP (direct calls only).
    #[arg(long)]
    best_effort: bool,
}

fn call_of(ev: &Event) -> Option<CallId> {
    match ev {
        Event::CallIncoming { call, .. }
        | Event::CallState { call, .. }
        | Event::CallAlgorithms { call, .. }
        | Event::CallSecurity { call, .. }
        | Event::CallStats { call, .. }
        | Event::CallStreamEnded { call, .. }
        | Event::CallDtmf { call, .. } => Some(*call),
        _ => None,
    }
}

/// Follows one call until it ends, hanging up after `duration` once connected.
/// Returns whether it connected and, under the mandatory policy, became secure.
fn follow(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    call: CallId,
    duration: Option<f64>,
    dtmf: Option<&str>,
    out: &Out,
) -> Result<bool, CliError> {
    let mut connected_at: Option<Instant> = None;
    let mut hung_up = false;
    let mut ok = false;
    let mut dtmf = dtmf.map(str::to_owned);
    loop {
        let wait = match (connected_at, duration) {
            (Some(t), Some(d)) if !hung_up => {
                Duration::from_secs_f64(d).saturating_sub(t.elapsed())
            }
            _ => Duration::from_secs(120),
        };
        let ev = phone.next_event(rx, wait.max(Duration::from_millis(10)));
        if let Some(ev) = &ev {
            if call_of(ev) == Some(call) || matches!(ev, Event::AccountStatus { .. }) {
                print(out, ev);
            }
            match ev {
                Event::CallState {
                    call: c,
                    state: CallState::Connected,
                } if *c == call => {
                    connected_at.get_or_insert_with(Instant::now);
                }
                Event::CallSecurity { call: c, security } if *c == call => {
                    if security.is_encrypted() || *security == CallSecurity::Cleartext {
                        ok = true;
                    }
                    if security.is_encrypted()
                        && let Some(keys) = dtmf.take()
                    {
                        phone.execute_blocking(Command::SendDtmf { call, keys })?;
                    }
                }
                Event::CallState {
                    call: c,
                    state: CallState::Ended(_),
                } if *c == call => {
                    return Ok(ok && connected_at.is_some());
                }
                _ => {}
            }
        } else if connected_at.is_none() {
            return Err(CoreError::Call("no progress for two minutes".into()).into());
        }
        if !hung_up
            && let (Some(t), Some(d)) = (connected_at, duration)
            && t.elapsed().as_secs_f64() >= d
        {
            hung_up = true;
            if let Err(e) = phone.execute_blocking(Command::Hangup { call }) {
                tracing::debug!(error = %e, "hangup");
            }
        }
    }
}

pub(crate) fn call(
    phone: &Phone,
    args: CallArgs,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    // ZRTP's retained secrets and verified keys are in the vault.
    unlock_if_needed(phone, secrets)?;
    let mut rx = phone.events();
    let account = match &args.account {
        Some(key) => Some(connect(phone, &mut rx, key, secrets, out)?),
        None => None,
    };
    let policy = args.best_effort.then_some(EncryptionPolicy::BestEffort);
    let Reply::Call(call) = phone.execute_blocking(Command::PlaceCall {
        account,
        target: args.target.clone(),
        audio: args.audio.choice()?,
        policy,
    })?
    else {
        return Err(CoreError::Call("no call was placed".into()).into());
    };
    if follow(
        phone,
        &mut rx,
        call,
        args.duration,
        args.dtmf.as_deref(),
        out,
    )? {
        Ok(())
    } else {
        Err(CoreError::Call("the call did not connect securely".into()).into())
    }
}

pub(crate) fn answer(
    phone: &Phone,
    args: AnswerArgs,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    unlock_if_needed(phone, secrets)?;
    let mut rx = phone.events();
    if let Some(key) = &args.account {
        connect(phone, &mut rx, key, secrets, out)?;
    } else {
        let policy = if args.best_effort {
            EncryptionPolicy::BestEffort
        } else {
            EncryptionPolicy::Mandatory
        };
        if let Reply::Listening(addr) = phone.execute_blocking(Command::Listen {
            addr: args.listen,
            auto_answer: None,
            policy,
        })? {
            out.record("listening", &[("address", addr.to_string().into())]);
        }
    }
    let mut handled = 0;
    while handled < args.count {
        let Some(ev) = phone.next_event(&mut rx, Duration::from_secs(3600)) else {
            continue;
        };
        print(out, &ev);
        let Event::CallIncoming { call, from } = ev else {
            continue;
        };
        let take = args.auto
            || secrets
                .confirm(&format!("Answer the call from {from}?"), false)
                .unwrap_or(false);
        if !take {
            phone.execute_blocking(Command::Reject { call, busy: false })?;
            continue;
        }
        phone.execute_blocking(Command::Answer {
            call,
            audio: args.audio.choice()?,
        })?;
        follow(phone, &mut rx, call, args.duration, None, out)?;
        handled += 1;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(crate) struct SasArgs {
    /// The peer's SIP address.
    peer: String,
    /// The key to mark (24 hex digits, as listed); default: the one last seen.
    #[arg(long)]
    key: Option<String>,
    /// Withdraw the verification (of --key, or of every verified key of the address).
    #[arg(long)]
    reset: bool,
    /// Do not ask before marking the key last seen as verified.
    #[arg(long)]
    yes: bool,
}

/// Verification outside a call names one key: by default the one of the last secure call
/// with that address, listed first so the user sees what they confirm.
pub(crate) fn sas_verified(
    phone: &Phone,
    args: SasArgs,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    unlock_if_needed(phone, secrets)?;
    let Reply::PeerKeys(keys) = phone.execute_blocking(Command::PeerKeys {
        peer: args.peer.clone(),
    })?
    else {
        return Err(CliError::Usage("unexpected answer from the phone".into()));
    };
    for k in &keys {
        out.record(
            "peer-key",
            &[
                ("peer", k.peer.clone().into()),
                ("key", k.key.clone().into()),
                ("verified", k.verified.into()),
                ("last_seen", k.last_seen.into()),
            ],
        );
    }
    if keys.is_empty() {
        return Err(CliError::Usage(format!(
            "no secure call with {} yet: there is no code to verify",
            args.peer
        )));
    }
    let wanted = args.key.as_deref().map(|k| {
        k.split_whitespace()
            .collect::<String>()
            .to_ascii_lowercase()
    });
    let chosen: Vec<&hush_core::security::PeerKey> = match &wanted {
        Some(w) => keys.iter().filter(|k| &k.key == w).collect(),
        None if args.reset => keys.iter().filter(|k| k.verified).collect(),
        None => keys.iter().filter(|k| k.last_seen).collect(),
    };
    let Some(first) = chosen.first() else {
        return Err(CliError::Usage(match &wanted {
            Some(w) => format!("{} never presented the key {w} on a secure call", args.peer),
            None => format!("nothing to withdraw: no key of {} is verified", args.peer),
        }));
    };
    if !args.reset
        && wanted.is_none()
        && !secrets.confirm(
            &format!(
                "Mark {}'s key {} (from your last secure call with them) as verified? \
                 Only if you compared the code aloud on that call.",
                first.peer, first.key
            ),
            args.yes,
        )?
    {
        return Err(CliError::Usage("nothing was changed".into()));
    }
    for k in chosen {
        phone.execute_blocking(Command::SetPeerVerified {
            peer: args.peer.clone(),
            key: k.key.clone(),
            verified: !args.reset,
        })?;
        out.record(
            "sas",
            &[
                ("peer", k.peer.clone().into()),
                ("key", k.key.clone().into()),
                ("verified", (!args.reset).into()),
            ],
        );
    }
    Ok(())
}

/// Lists the sound card's devices, one line each, for `--input-device`/`--output-device`.
pub(crate) fn audio_devices(phone: &Phone, out: &Out) -> Result<(), CliError> {
    let Reply::AudioDevices { inputs, outputs } =
        phone.execute_blocking(Command::ListAudioDevices)?
    else {
        return Err(CliError::Usage("unexpected answer from the phone".into()));
    };
    if inputs.is_empty() && outputs.is_empty() {
        out.record(
            "audio",
            &[
                ("devices", 0.into()),
                ("note", "no sound card found".into()),
            ],
        );
    }
    for (kind, names) in [("input", inputs), ("output", outputs)] {
        for n in names {
            out.record("audio-device", &[("kind", kind.into()), ("name", n.into())]);
        }
    }
    Ok(())
}

/// Lists the cameras, one line each, for `--video-source`.
pub(crate) fn cameras(phone: &Phone, out: &Out) -> Result<(), CliError> {
    let Reply::Cameras(cameras) = phone.execute_blocking(Command::ListCameras)? else {
        return Err(CliError::Usage("unexpected answer from the phone".into()));
    };
    if cameras.is_empty() {
        out.record(
            "cameras",
            &[("devices", 0.into()), ("note", "no camera found".into())],
        );
    }
    for c in cameras {
        out.record(
            "camera",
            &[
                ("device", c.path.display().to_string().into()),
                ("name", c.name.into()),
            ],
        );
    }
    Ok(())
}

/// Calls the built-in echo peer over loopback and reports whether it all works.
pub(crate) fn echo_test(
    phone: &Phone,
    seconds: f64,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    unlock_if_needed(phone, secrets)?;
    let mut rx = phone.events();
    let echo = MediaChoice {
        source: SourceSpec::Echo,
        sink: SinkSpec::Null,
        video: None,
    };
    let Reply::Listening(addr) = phone.execute_blocking(Command::Listen {
        addr: "127.0.0.1:0"
            .parse()
            .map_err(|_| CliError::Usage("bad address".into()))?,
        auto_answer: Some(echo),
        policy: EncryptionPolicy::Mandatory,
    })?
    else {
        return Err(CoreError::Call("the echo peer did not start".into()).into());
    };
    let dir = tempfile::tempdir().map_err(|source| CliError::Input {
        what: "a temporary directory".into(),
        source,
    })?;
    let recording = dir.path().join("echo.wav");
    let audio = MediaChoice {
        source: SourceSpec::Beeps(440.0),
        sink: SinkSpec::Wav(recording.clone()),
        video: None,
    };
    let Reply::Call(call) = phone.execute_blocking(Command::PlaceCall {
        account: None,
        target: format!("echo@{addr}"),
        audio,
        policy: None,
    })?
    else {
        return Err(CoreError::Call("no call was placed".into()).into());
    };
    let mut sas: [Option<String>; 2] = [None, None];
    let mut algorithms = None;
    let mut echo_call = None;
    let start = Instant::now();
    let mut secure_at = None;
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(t) = secure_at
            && Instant::now().duration_since(t).as_secs_f64() >= seconds
        {
            break;
        }
        let Some(ev) = phone.next_event(&mut rx, Duration::from_millis(200)) else {
            continue;
        };
        match &ev {
            Event::CallIncoming { call: c, .. } => echo_call = Some(*c),
            Event::CallAlgorithms {
                call: c,
                algorithms: a,
            } if *c == call => algorithms = Some(a.clone()),
            Event::CallSecurity { call: c, security } if security.sas().is_some() => {
                let side = usize::from(*c != call);
                sas[side] = security.sas().map(str::to_owned);
                if sas.iter().all(Option::is_some) {
                    secure_at.get_or_insert_with(Instant::now);
                }
            }
            Event::CallSecurity {
                call: c,
                security: CallSecurity::Failed(r),
            } if *c == call => {
                return Err(CoreError::Call(format!("echo test failed: {r}")).into());
            }
            _ => {}
        }
    }
    let stats = phone
        .snapshot()
        .calls
        .iter()
        .find(|c| c.id == call)
        .and_then(|c| c.stats);
    phone.execute_blocking(Command::Hangup { call })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(ev) =
        phone.next_event(&mut rx, deadline.saturating_duration_since(Instant::now()))
    {
        if matches!(ev, Event::CallState { call: c, state: CallState::Ended(_) } if c == call) {
            break;
        }
    }
    let _ = echo_call;
    let (samples, rate) = hush_media::audio::read_recording(&recording)
        .map_err(|e| CoreError::Call(e.to_string()))?;
    let measured = hush_media::analysis::beep_delay(&samples, rate);
    let pitch = {
        let voiced: Vec<i16> = samples
            .iter()
            .copied()
            .filter(|s| s.unsigned_abs() > 200)
            .collect();
        hush_media::analysis::dominant_frequency(&voiced, rate)
    };
    let (latency, corr) = measured.unwrap_or((0, 0.0));
    let echo_ok = measured.is_some() && corr > 0.6 && (pitch - 440.0).abs() <= 10.0;
    let sas_match = sas[0].is_some() && sas[0] == sas[1];
    let mut f = vec![
        ("caller_sas", sas[0].clone().unwrap_or_default().into()),
        ("echo_sas", sas[1].clone().unwrap_or_default().into()),
        ("sas_match", sas_match.into()),
        ("algorithms", algorithms.unwrap_or_default().into()),
        ("latency_ms", latency.into()),
        ("echo_ok", echo_ok.into()),
    ];
    if let Some(s) = stats {
        f.push(("packets_received", s.packets_received.into()));
        f.push(("packets_lost", s.packets_lost.into()));
    }
    out.record("echo-test", &f);
    if sas_match && echo_ok {
        Ok(())
    } else {
        Err(CoreError::Call("the echo test did not pass".into()).into())
    }
}
