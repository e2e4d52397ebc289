//! Command-line parsing and wiring. Every subcommand drives the same core API as the
//! window; output is `key=value` lines for scripts, or JSON lines with `--json`.
//!
//! One module per command family (`calls`, `chat`, `otr`), and leaves they all use:
//! `error`, `output` (records), `records` (how each event prints), `secrets`
//! (passwords) and `session` (unlock, find an account, bring it online).

mod account;
mod calls;
mod chat;
mod error;
mod otr;
mod output;
mod profile;
mod records;
mod secrets;
mod session;

use error::CliError;
use output::Out;
use secrets::Secrets;
use session::unlock_if_needed;

use clap::{Parser, Subcommand};
use hush_core::profile::paths;
use hush_core::{Phone, Profile};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "hushphone",
    version,
    about = "Private calls (SIP + ZRTP) and chat (XMPP + OTR)."
)]
struct Cli {
    /// Profile directory (default: $HUSHPHONE_PROFILE, else ~/.local/share/hushphone).
    #[arg(long, global = true, value_name = "DIR")]
    profile: Option<PathBuf>,
    /// Read passwords from standard input, one per line, in the order they are asked for.
    #[arg(long, global = true)]
    stdin: bool,
    /// Print JSON lines instead of key=value lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Open the window (the default).
    Gui {
        /// Render the window, save it as PNG to FILE and exit.
        #[arg(long, value_name = "FILE")]
        screenshot: Option<PathBuf>,
        /// Open on this page: home, accounts, contacts, calls, settings, or chat:ADDRESS.
        #[arg(long)]
        page: Option<String>,
        /// Start the echo test at once, with a test tone instead of the microphone (the
        /// screenshot waits until the call is secure).
        #[arg(long)]
        echo_test: bool,
        /// The same with video: the far end sends the test pattern back (the screenshot
        /// waits until its pictures show).
        #[arg(long, conflicts_with = "echo_test")]
        video_test: bool,
        /// The same sharing the screen (`$DISPLAY`): the sharing bar shows.
        #[arg(long, conflicts_with_all = ["echo_test", "video_test"])]
        share_test: bool,
    },
    /// Add, list or remove accounts.
    #[command(subcommand)]
    Account(account::AccountCmd),
    /// Master password and profile information.
    #[command(subcommand)]
    Profile(profile::ProfileCmd),
    /// Chat and call history (off unless you turn it on).
    #[command(subcommand)]
    History(profile::HistoryCmd),
    /// Place a call: `hushphone call bob@example.org --account alice@example.org`.
    Call(calls::CallArgs),
    /// Wait for a call and answer it.
    Answer(calls::AnswerArgs),
    /// Make a ZRTP-secured call to a built-in echo on this machine; no account needed.
    EchoTest {
        /// Seconds of audio once secure.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
    },
    /// Chat: accounts, roster, messages and rooms (XMPP).
    #[command(subcommand)]
    Xmpp(chat::XmppCmd),
    /// List the sound card's microphones and speakers (for --input-device/--output-device).
    AudioDevices,
    /// List the cameras (for --video-source).
    Cameras,
    /// Mark the key a peer last called with as verified, outside a call (you compared
    /// the code aloud on that call). Shows the key and asks first; --reset withdraws.
    SasVerified(calls::SasArgs),
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSHPHONE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,winit=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<(), CliError> {
    let dir = paths::resolve(cli.profile.as_deref())?;
    let profile = Profile::open(&dir)?;
    let phone = Arc::new(Phone::start(profile)?);
    let out = Out { json: cli.json };
    let mut secrets = Secrets::new(cli.stdin);
    let gui = Cmd::Gui {
        screenshot: None,
        page: None,
        echo_test: false,
        video_test: false,
        share_test: false,
    };
    match cli.command.unwrap_or(gui) {
        Cmd::Gui {
            screenshot,
            page,
            echo_test,
            video_test,
            share_test,
        } => hush_ui::run(
            phone,
            hush_ui::Options {
                screenshot,
                page,
                echo_test,
                video_test,
                share_test,
            },
        )?,
        Cmd::Account(cmd) => account::account(&phone, cmd, &mut secrets, &out)?,
        Cmd::Profile(cmd) => profile::profile_cmd(&phone, cmd, &mut secrets, &out)?,
        Cmd::History(cmd) => profile::history(&phone, cmd, &mut secrets, &out)?,
        Cmd::Call(args) => calls::call(&phone, args, &mut secrets, &out)?,
        Cmd::Answer(args) => calls::answer(&phone, args, &mut secrets, &out)?,
        Cmd::Xmpp(cmd) => chat::run(&phone, cmd, &mut secrets, &out)?,
        Cmd::EchoTest { seconds } => calls::echo_test(&phone, seconds, &mut secrets, &out)?,
        Cmd::SasVerified(args) => calls::sas_verified(&phone, args, &mut secrets, &out)?,
        Cmd::AudioDevices => calls::audio_devices(&phone, &out)?,
        Cmd::Cameras => calls::cameras(&phone, &out)?,
    }
    Ok(())
}
