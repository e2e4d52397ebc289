//! Command-line parsing and wiring. Every subcommand drives the same core API as the
//! window; output is `key=value` lines for scripts, or JSON lines with `--json`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use hush_core::model::{AccountSettings, EncryptionPolicy, SipSettings, Transport, XmppSettings};
use hush_core::profile::{MIN_MASTER_PASSWORD_LEN, paths};
use hush_core::{
    AccountConfig, Command, CoreError, NewAccount, Phone, Profile, Protocol, Reply, Secret,
};
use serde_json::Value;
use std::io::{BufRead, IsTerminal};
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
    },
    /// Add, list or remove accounts.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Master password and profile information.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Chat and call history (off unless you turn it on).
    #[command(subcommand)]
    History(HistoryCmd),
    /// Place a call: `hushphone call bob@example.org --account alice@example.org`.
    Call(crate::calls::CallArgs),
    /// Wait for a call and answer it.
    Answer(crate::calls::AnswerArgs),
    /// Make a ZRTP-secured call to a built-in echo on this machine; no account needed.
    EchoTest {
        /// Seconds of audio once secure.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
    },
    /// Chat: accounts, roster, messages and rooms (XMPP).
    #[command(subcommand)]
    Xmpp(crate::chat_cli::XmppCmd),
    /// List the sound card's microphones and speakers (for --input-device/--output-device).
    AudioDevices,
    /// Mark the key a peer last called with as verified, outside a call (you compared
    /// the code aloud on that call). Shows the key and asks first; --reset withdraws.
    SasVerified(crate::calls::SasArgs),
}

#[derive(Subcommand, Debug)]
enum AccountCmd {
    /// Add an account. The password is asked for (or read with --stdin).
    Add(AddArgs),
    /// List accounts.
    List,
    /// Remove an account by id or address.
    Remove {
        /// Numeric id or address.
        account: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ProtocolArg {
    Sip,
    Xmpp,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum TransportArg {
    Udp,
    Tcp,
    Tls,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum EncryptionArg {
    Mandatory,
    BestEffort,
}

#[derive(Args, Debug)]
struct AddArgs {
    /// sip or xmpp.
    protocol: ProtocolArg,
    /// user@domain (SIP accepts a sip: prefix).
    address: String,
    /// Friendly name.
    #[arg(long)]
    name: Option<String>,
    /// Do not save the password; it is asked for when connecting.
    #[arg(long)]
    no_remember: bool,
    /// SIP: registrar URI (default: the address's domain).
    #[arg(long)]
    registrar: Option<String>,
    /// SIP: outbound proxy URI.
    #[arg(long)]
    proxy: Option<String>,
    /// SIP: signalling transport.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// SIP over TLS: also trust the certificates in this PEM file (a private CA, or a
    /// self-hosted server's certificate). The system's roots are always trusted.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<String>,
    /// SIP: what a call does when ZRTP cannot be set up.
    #[arg(long, value_enum, default_value = "mandatory")]
    encryption: EncryptionArg,
    /// XMPP: host:port to connect to instead of the domain's SRV record.
    #[arg(long)]
    server: Option<String>,
    /// XMPP: trust a self-hosted server's certificate with this SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256")]
    pin_cert: Option<String>,
    /// XMPP: SOCKS5 proxy host:port (Tor: 127.0.0.1:9050).
    #[arg(long, value_name = "HOST:PORT")]
    socks5: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ProfileCmd {
    /// Where the profile is and how it is protected.
    Info,
    /// Protect saved passwords and keys with a master password.
    SetMasterPassword,
    /// Change the master password (everything is re-sealed).
    ChangeMasterPassword,
    /// Remove the master password: secrets then rely on file permissions only.
    RemoveMasterPassword {
        /// Confirm without being asked.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
enum HistoryCmd {
    /// Keep history (by default, or for one contact with --account/--contact).
    On(HistoryTarget),
    /// Stop keeping history (by default, or for one contact).
    Off(HistoryTarget),
    /// Erase all history.
    Erase {
        /// Confirm without being asked.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug)]
struct HistoryTarget {
    /// Account id or address (with --contact).
    #[arg(long, requires = "contact")]
    account: Option<String>,
    /// Contact address (with --account).
    #[arg(long, requires = "account")]
    contact: Option<String>,
}

/// Errors the CLI reports; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {what}: {source}")]
    Input {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ui(#[from] hush_ui::UiError),
}

/// Where passwords come from: stdin lines (scripts) or a no-echo prompt (people).
pub(crate) struct Secrets {
    from_stdin: bool,
    lines: Option<std::io::Lines<std::io::StdinLock<'static>>>,
}

impl Secrets {
    fn new(from_stdin: bool) -> Self {
        Secrets {
            from_stdin,
            lines: None,
        }
    }

    pub(crate) fn ask(&mut self, what: &str) -> Result<Secret, CliError> {
        if self.from_stdin {
            let lines = self
                .lines
                .get_or_insert_with(|| std::io::stdin().lock().lines());
            return match lines.next() {
                Some(Ok(line)) => Ok(Secret::new(line)),
                Some(Err(source)) => Err(CliError::Input {
                    what: what.into(),
                    source,
                }),
                None => Err(CliError::Usage(format!(
                    "standard input ended before the {what}"
                ))),
            };
        }
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(format!(
                "no terminal to ask for the {what}; pass --stdin and give it on standard input"
            )));
        }
        rpassword::prompt_password(format!("{what}: "))
            .map(Secret::new)
            .map_err(|source| CliError::Input {
                what: what.into(),
                source,
            })
    }

    /// Asks twice on a terminal so a typo does not lock the user out.
    pub(crate) fn ask_new(&mut self, what: &str) -> Result<Secret, CliError> {
        let first = self.ask(what)?;
        if !self.from_stdin {
            let again = self.ask(&format!("{what} (again)"))?;
            if again != first {
                return Err(CliError::Usage(
                    "the two entries differ; nothing was changed".into(),
                ));
            }
        }
        Ok(first)
    }

    pub(crate) fn confirm(&mut self, question: &str, yes_flag: bool) -> Result<bool, CliError> {
        if yes_flag {
            return Ok(true);
        }
        if self.from_stdin || !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(format!(
                "{question} Pass --yes to confirm."
            )));
        }
        eprint!("{question} Type yes to continue: ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|source| CliError::Input {
                what: "confirmation".into(),
                source,
            })?;
        Ok(answer.trim().eq_ignore_ascii_case("yes"))
    }
}

/// Prints records as `key=value` lines or JSON lines.
pub(crate) struct Out {
    json: bool,
}

impl Out {
    pub(crate) fn record(&self, kind: &str, fields: &[(&str, Value)]) {
        if self.json {
            let mut map = serde_json::Map::new();
            map.insert("type".into(), kind.into());
            for (k, v) in fields {
                map.insert((*k).into(), v.clone());
            }
            println!("{}", Value::Object(map));
        } else {
            let mut line = kind.to_owned();
            for (k, v) in fields {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '"') {
                    line.push_str(&format!(" {k}={text:?}"));
                } else {
                    line.push_str(&format!(" {k}={text}"));
                }
            }
            println!("{line}");
        }
    }

    fn account(&self, a: &AccountConfig) {
        let mut fields = vec![
            ("id", a.id.0.into()),
            ("protocol", a.protocol().as_str().into()),
            ("address", a.address.clone().into()),
            ("remember_password", a.remember_password.into()),
        ];
        if let Some(n) = &a.display_name {
            fields.push(("name", n.clone().into()));
        }
        self.record("account", &fields);
    }
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
    };
    match cli.command.unwrap_or(gui) {
        Cmd::Gui {
            screenshot,
            page,
            echo_test,
        } => hush_ui::run(
            phone,
            hush_ui::Options {
                screenshot,
                page,
                echo_test,
            },
        )?,
        Cmd::Account(cmd) => account(&phone, cmd, &mut secrets, &out)?,
        Cmd::Profile(cmd) => profile_cmd(&phone, cmd, &mut secrets, &out)?,
        Cmd::History(cmd) => history(&phone, cmd, &mut secrets, &out)?,
        Cmd::Call(args) => crate::calls::call(&phone, args, &mut secrets, &out)?,
        Cmd::Answer(args) => crate::calls::answer(&phone, args, &mut secrets, &out)?,
        Cmd::Xmpp(cmd) => crate::chat_cli::run(&phone, cmd, &mut secrets, &out)?,
        Cmd::EchoTest { seconds } => crate::calls::echo_test(&phone, seconds, &mut secrets, &out)?,
        Cmd::SasVerified(args) => crate::calls::sas_verified(&phone, args, &mut secrets, &out)?,
        Cmd::AudioDevices => crate::calls::audio_devices(&phone, &out)?,
    }
    Ok(())
}

pub(crate) fn unlock_if_needed(phone: &Phone, secrets: &mut Secrets) -> Result<(), CliError> {
    if phone.snapshot().locked {
        let password = secrets.ask("Master password")?;
        phone.execute_blocking(Command::Unlock { password })?;
    }
    Ok(())
}

fn account(
    phone: &Phone,
    cmd: AccountCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    match cmd {
        AccountCmd::Add(args) => {
            let settings = match args.protocol {
                ProtocolArg::Sip => {
                    if args.server.is_some() || args.pin_cert.is_some() || args.socks5.is_some() {
                        return Err(CliError::Usage(
                            "--server, --pin-cert and --socks5 are XMPP options".into(),
                        ));
                    }
                    AccountSettings::Sip(SipSettings {
                        registrar: args.registrar,
                        outbound_proxy: args.proxy,
                        tls_ca_file: args.tls_ca.map(|p| {
                            std::fs::canonicalize(&p)
                                .map(|c| c.display().to_string())
                                .unwrap_or(p)
                        }),
                        transport: match args.transport {
                            TransportArg::Udp => Transport::Udp,
                            TransportArg::Tcp => Transport::Tcp,
                            TransportArg::Tls => Transport::Tls,
                        },
                        encryption: match args.encryption {
                            EncryptionArg::Mandatory => EncryptionPolicy::Mandatory,
                            EncryptionArg::BestEffort => EncryptionPolicy::BestEffort,
                        },
                        realm: None,
                    })
                }
                ProtocolArg::Xmpp => {
                    if args.registrar.is_some() || args.proxy.is_some() || args.tls_ca.is_some() {
                        return Err(CliError::Usage(
                            "--registrar, --proxy and --tls-ca are SIP options".into(),
                        ));
                    }
                    AccountSettings::Xmpp(XmppSettings {
                        server: args.server,
                        pinned_cert_sha256: args
                            .pin_cert
                            .map(|p| normalize_fingerprint(&p))
                            .transpose()?,
                        socks5_proxy: args.socks5,
                        otr_policy: Default::default(),
                    })
                }
            };
            let remember = !args.no_remember;
            let password = if remember {
                unlock_if_needed(phone, secrets)?;
                Some(secrets.ask("Account password")?)
            } else {
                None
            };
            let new = NewAccount {
                address: args.address,
                display_name: args.name,
                password,
                remember_password: remember,
                settings,
            };
            if let Reply::Account(a) = phone.execute_blocking(Command::AddAccount(new))? {
                out.account(&a);
            }
        }
        AccountCmd::List => {
            for a in &phone.snapshot().accounts {
                out.account(&a.config);
            }
        }
        AccountCmd::Remove { account } => {
            let snap = phone.snapshot();
            let id = find_account(
                &snap
                    .accounts
                    .iter()
                    .map(|a| a.config.clone())
                    .collect::<Vec<_>>(),
                &account,
            )?;
            phone.execute_blocking(Command::RemoveAccount(id))?;
            out.record("removed", &[("id", id.0.into())]);
        }
    }
    Ok(())
}

pub(crate) fn find_account(
    accounts: &[AccountConfig],
    key: &str,
) -> Result<hush_core::AccountId, CliError> {
    let bare = key
        .trim()
        .trim_start_matches("sip:")
        .trim_start_matches("xmpp:");
    let hits: Vec<&AccountConfig> = accounts
        .iter()
        .filter(|a| a.id.to_string() == key.trim() || a.address.eq_ignore_ascii_case(bare))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.id),
        [] => Err(CoreError::NoSuchAccount(key.into()).into()),
        _ => Err(CliError::Usage(format!(
            "{key:?} matches several accounts; use the numeric id from `account list`"
        ))),
    }
}

/// Accepts `AB:CD:...`, spaced or plain hex; stores lower-case hex without separators.
fn normalize_fingerprint(input: &str) -> Result<String, CliError> {
    let hex: String = input
        .chars()
        .filter(|c| !matches!(c, ':' | ' '))
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::Usage(
            "--pin-cert wants a SHA-256 fingerprint: 64 hex digits".into(),
        ));
    }
    Ok(hex)
}

fn profile_cmd(
    phone: &Phone,
    cmd: ProfileCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    match cmd {
        ProfileCmd::Info => {
            let snap = phone.snapshot();
            out.record(
                "profile",
                &[
                    ("dir", snap.profile_dir.display().to_string().into()),
                    ("master_password", snap.master_password_set.into()),
                    ("history_default", snap.history_default.into()),
                    ("accounts", snap.accounts.len().into()),
                ],
            );
        }
        ProfileCmd::SetMasterPassword => {
            if phone.snapshot().master_password_set {
                return Err(CoreError::MasterPasswordAlreadySet.into());
            }
            if !secrets.from_stdin {
                eprintln!(
                    "The master password seals saved passwords and keys; it cannot be recovered if forgotten (at least {MIN_MASTER_PASSWORD_LEN} characters)."
                );
            }
            let new = secrets.ask_new("New master password")?;
            phone.execute_blocking(Command::SetMasterPassword { new })?;
            out.record("master_password", &[("state", "set".into())]);
        }
        ProfileCmd::ChangeMasterPassword => {
            let old = secrets.ask("Current master password")?;
            let new = secrets.ask_new("New master password")?;
            phone.execute_blocking(Command::ChangeMasterPassword { old, new })?;
            out.record("master_password", &[("state", "changed".into())]);
        }
        ProfileCmd::RemoveMasterPassword { yes } => {
            if !phone.snapshot().master_password_set {
                return Err(CoreError::NoMasterPassword.into());
            }
            let warning = "Without a master password, anyone who can read your profile files can recover your saved passwords and keys.";
            if !secrets.confirm(warning, yes)? {
                return Err(CliError::Usage("not confirmed; nothing was changed".into()));
            }
            let current = secrets.ask("Current master password")?;
            phone.execute_blocking(Command::RemoveMasterPassword { current })?;
            out.record("master_password", &[("state", "removed".into())]);
        }
    }
    Ok(())
}

fn history(
    phone: &Phone,
    cmd: HistoryCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    let (on, target) = match cmd {
        HistoryCmd::On(t) => (true, t),
        HistoryCmd::Off(t) => (false, t),
        HistoryCmd::Erase { yes } => {
            if !secrets.confirm("This erases all chat and call history for good.", yes)? {
                return Err(CliError::Usage("not confirmed; nothing was erased".into()));
            }
            unlock_if_needed(phone, secrets)?;
            phone.execute_blocking(Command::EraseHistory)?;
            out.record("history", &[("state", "erased".into())]);
            return Ok(());
        }
    };
    match (target.account, target.contact) {
        (Some(account), Some(contact)) => {
            unlock_if_needed(phone, secrets)?;
            let accounts: Vec<AccountConfig> = phone
                .snapshot()
                .accounts
                .iter()
                .map(|a| a.config.clone())
                .collect();
            let id = find_account(&accounts, &account)?;
            let protocol = accounts
                .iter()
                .find(|a| a.id == id)
                .map(|a| a.protocol())
                .unwrap_or(Protocol::Xmpp);
            let peer = hush_core::model::normalize_address(protocol, &contact)?;
            phone.execute_blocking(Command::SetHistoryFor {
                account: id,
                peer: peer.clone(),
                choice: Some(on),
            })?;
            out.record(
                "history",
                &[
                    ("account", id.0.into()),
                    ("contact", peer.into()),
                    ("enabled", on.into()),
                ],
            );
        }
        _ => {
            phone.execute_blocking(Command::SetHistoryDefault(on))?;
            out.record("history", &[("default", on.into())]);
        }
    }
    Ok(())
}
