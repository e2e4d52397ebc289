//! `hushphone xmpp otr ...`: keys, fingerprints, policies and private conversations from
//! the command line. A private conversation lives as long as the process, so the
//! session commands (start, smp-*) log in, make the conversation private, do their
//! work and print every security change as a line (JSON with --json).

use super::error::CliError;
use super::output::Out;
use super::secrets::Secrets;
use super::session::{AccountArg, connect, follow};
use clap::Subcommand;
use hush_core::model::OtrPolicySetting;
use hush_core::snapshot::SmpView;
use hush_core::{AccountId, ChatSecurity, Command, CoreError, Event, Phone, Reply, Secret};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::broadcast;

#[derive(Subcommand, Debug)]
pub(crate) enum OtrCmd {
    /// Print our fingerprint and the buddies' fingerprints we know.
    Fingerprint(AccountArg),
    /// Mark a buddy's fingerprint verified after comparing it over a trusted channel.
    Verify {
        #[command(flatten)]
        account: AccountArg,
        /// The buddy.
        jid: String,
        /// The fingerprint as the buddy read it to you (spaces and case do not matter).
        fingerprint: String,
        /// Withdraw the verification instead.
        #[arg(long)]
        unverify: bool,
    },
    /// Forget a buddy's fingerprint.
    Forget {
        #[command(flatten)]
        account: AccountArg,
        /// The buddy.
        jid: String,
        /// The fingerprint.
        fingerprint: String,
    },
    /// When to use OTR: for the account, or for one buddy (--peer).
    Policy {
        #[command(flatten)]
        account: AccountArg,
        /// One buddy only.
        #[arg(long)]
        peer: Option<String>,
        /// manual, opportunistic or require; "default" clears a buddy's own.
        policy: String,
    },
    /// Start a private conversation, say things in it, and print what happens.
    Start {
        #[command(flatten)]
        session: Session,
        /// Say this once private (repeatable).
        #[arg(long)]
        say: Vec<String>,
        /// End the private conversation before leaving (the buddy is told).
        #[arg(long)]
        end: bool,
    },
    /// Authenticate the buddy with a question only they can answer (the answer is
    /// asked for, or read with --stdin).
    SmpQuestion {
        #[command(flatten)]
        session: Session,
        /// The question the buddy sees.
        #[arg(long)]
        question: String,
    },
    /// Authenticate the buddy with a secret you both know (asked for, or --stdin).
    SmpSecret {
        #[command(flatten)]
        session: Session,
    },
    /// Wait for the buddy to authenticate you, then answer (asked for, or --stdin).
    SmpAnswer {
        #[command(flatten)]
        session: Session,
    },
    /// Import Pidgin's otr.private_key and/or otr.fingerprints.
    Import {
        /// Pidgin's otr.private_key.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Pidgin's otr.fingerprints.
        #[arg(long)]
        fingerprints: Option<PathBuf>,
    },
    /// Export keys and fingerprints in Pidgin's formats (files are created 0600).
    Export {
        /// Where to write otr.private_key.
        #[arg(long)]
        keys: PathBuf,
        /// Where to write otr.fingerprints.
        #[arg(long)]
        fingerprints: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub(crate) struct Session {
    #[command(flatten)]
    account: AccountArg,
    /// The buddy.
    jid: String,
    /// Stay this many seconds after the work is done, printing what arrives.
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Longest to wait for the conversation to become private (seconds).
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
}

fn policy_arg(s: &str) -> Result<Option<OtrPolicySetting>, CliError> {
    match s {
        "manual" => Ok(Some(OtrPolicySetting::Manual)),
        "opportunistic" => Ok(Some(OtrPolicySetting::Opportunistic)),
        "require" => Ok(Some(OtrPolicySetting::Require)),
        "default" => Ok(None),
        other => Err(CliError::Usage(format!(
            "{other:?}: the policy is manual, opportunistic, require (or default for a buddy)"
        ))),
    }
}

fn read_file(path: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// Writes `data` to `path` readable by the owner only — also when `path` already
/// exists with looser permissions, or is a link: the data goes into a new 0600 file in
/// the same directory, which then replaces `path` (rename, so never half-written).
fn write_private(path: &PathBuf, data: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = |e: std::io::Error| CliError::Usage(format!("{}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("{}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(shown)
}

fn timeout(what: &str) -> CliError {
    CoreError::Call(format!("{what} timed out")).into()
}

/// Starts OTR with the buddy and waits until the conversation is private.
fn go_private(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    out: &Out,
    id: AccountId,
    s: &Session,
) -> Result<(), CliError> {
    let peer = s.jid.clone();
    let private_now = |p: &Phone| {
        p.snapshot().chats.iter().any(|c| {
            c.account == id
                && c.peer == peer
                && matches!(
                    c.security,
                    ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified
                )
        })
    };
    phone.execute_blocking(Command::OtrStart {
        account: id,
        peer: s.jid.clone(),
    })?;
    if private_now(phone) {
        return Ok(());
    }
    let p = s.jid.clone();
    if follow(
        phone,
        rx,
        out,
        Duration::from_secs_f64(s.timeout),
        |e| matches!(e, Event::ChatSecurity { peer, security: ChatSecurity::PrivateUnverified | ChatSecurity::PrivateVerified, .. } if *peer == p),
    ) {
        Ok(())
    } else {
        Err(timeout("making the conversation private"))
    }
}

/// Waits for the end of an authentication; fails unless it succeeded.
fn smp_outcome(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    out: &Out,
    s: &Session,
) -> Result<(), CliError> {
    let mut outcome = None;
    follow(phone, rx, out, Duration::from_secs_f64(s.timeout), |e| {
        if let Event::Smp { progress, .. } = e
            && matches!(
                progress,
                SmpView::Succeeded | SmpView::Failed | SmpView::Aborted
            )
        {
            outcome = Some(progress.clone());
            return true;
        }
        false
    });
    match outcome {
        Some(SmpView::Succeeded) => Ok(()),
        Some(_) => {
            Err(CoreError::Call("authentication failed: the buddy is not verified".into()).into())
        }
        None => Err(timeout("the buddy did not answer: authentication")),
    }
}

fn linger(phone: &Phone, rx: &mut broadcast::Receiver<Event>, out: &Out, s: &Session) {
    if s.duration > 0.0 {
        follow(phone, rx, out, Duration::from_secs_f64(s.duration), |_| {
            false
        });
    }
}

pub(crate) fn run(
    phone: &Phone,
    cmd: OtrCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    let mut rx = phone.events();
    match cmd {
        OtrCmd::Fingerprint(a) => {
            let id = connect(phone, &mut rx, &a.account, secrets, out)?;
            let snap = phone.snapshot();
            for k in snap.otr_keys.iter().filter(|k| k.account == id) {
                out.record(
                    "fingerprint",
                    &[
                        ("account", id.0.into()),
                        ("fingerprint", k.fingerprint.clone().into()),
                    ],
                );
            }
            for k in snap.known_fingerprints.iter().filter(|k| k.account == id) {
                out.record(
                    "known",
                    &[
                        ("account", id.0.into()),
                        ("peer", k.peer.clone().into()),
                        ("fingerprint", k.fingerprint.clone().into()),
                        ("verified", k.verified.into()),
                    ],
                );
            }
        }
        OtrCmd::Verify {
            account,
            jid,
            fingerprint,
            unverify,
        } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            phone.execute_blocking(Command::OtrTrust {
                account: id,
                peer: jid.clone(),
                fingerprint: fingerprint.clone(),
                verified: !unverify,
            })?;
            out.record(
                "verified",
                &[
                    ("account", id.0.into()),
                    ("peer", jid.into()),
                    ("fingerprint", fingerprint.into()),
                    ("verified", (!unverify).into()),
                ],
            );
        }
        OtrCmd::Forget {
            account,
            jid,
            fingerprint,
        } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            phone.execute_blocking(Command::OtrForget {
                account: id,
                peer: jid.clone(),
                fingerprint: fingerprint.clone(),
            })?;
            out.record(
                "forgotten",
                &[("peer", jid.into()), ("fingerprint", fingerprint.into())],
            );
        }
        OtrCmd::Policy {
            account,
            peer,
            policy,
        } => {
            let p = policy_arg(&policy)?;
            if peer.is_none() && p.is_none() {
                return Err(CliError::Usage(
                    "an account needs a policy: manual, opportunistic or require".into(),
                ));
            }
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            phone.execute_blocking(Command::OtrSetPolicy {
                account: id,
                peer: peer.clone(),
                policy: p,
            })?;
            out.record(
                "policy",
                &[
                    ("account", id.0.into()),
                    ("peer", peer.unwrap_or_default().into()),
                    ("policy", policy.into()),
                ],
            );
        }
        OtrCmd::Start { session, say, end } => {
            let id = connect(phone, &mut rx, &session.account.account, secrets, out)?;
            go_private(phone, &mut rx, out, id, &session)?;
            for text in say {
                phone.execute_blocking(Command::SendChat {
                    account: id,
                    to: session.jid.clone(),
                    body: text,
                })?;
                if !follow(phone, &mut rx, out, Duration::from_secs(15), |e| {
                    matches!(e, Event::ChatDelivered { .. })
                }) {
                    return Err(timeout("delivering the message"));
                }
            }
            linger(phone, &mut rx, out, &session);
            if end {
                phone.execute_blocking(Command::OtrEnd {
                    account: id,
                    peer: session.jid.clone(),
                })?;
                follow(phone, &mut rx, out, Duration::from_millis(500), |_| false);
            }
        }
        OtrCmd::SmpQuestion { session, question } => {
            let answer = secrets.ask("Answer to the question")?;
            let id = connect(phone, &mut rx, &session.account.account, secrets, out)?;
            go_private(phone, &mut rx, out, id, &session)?;
            phone.execute_blocking(Command::OtrAuthenticate {
                account: id,
                peer: session.jid.clone(),
                question: Some(question),
                secret: answer,
            })?;
            smp_outcome(phone, &mut rx, out, &session)?;
            linger(phone, &mut rx, out, &session);
        }
        OtrCmd::SmpSecret { session } => {
            let secret = secrets.ask("Shared secret")?;
            let id = connect(phone, &mut rx, &session.account.account, secrets, out)?;
            go_private(phone, &mut rx, out, id, &session)?;
            phone.execute_blocking(Command::OtrAuthenticate {
                account: id,
                peer: session.jid.clone(),
                question: None,
                secret,
            })?;
            smp_outcome(phone, &mut rx, out, &session)?;
            linger(phone, &mut rx, out, &session);
        }
        OtrCmd::SmpAnswer { session } => {
            let id = connect(phone, &mut rx, &session.account.account, secrets, out)?;
            let p = session.jid.clone();
            let asked = follow(
                phone,
                &mut rx,
                out,
                Duration::from_secs_f64(session.timeout),
                |e| matches!(e, Event::Smp { peer, progress: SmpView::Asked(_) | SmpView::SecretAsked, .. } if *peer == p),
            );
            if !asked {
                return Err(timeout("waiting for the buddy's question"));
            }
            let answer = secrets.ask("Answer")?;
            phone.execute_blocking(Command::OtrRespond {
                account: id,
                peer: session.jid.clone(),
                secret: answer,
            })?;
            smp_outcome(phone, &mut rx, out, &session)?;
            linger(phone, &mut rx, out, &session);
        }
        OtrCmd::Import { keys, fingerprints } => {
            if keys.is_none() && fingerprints.is_none() {
                return Err(CliError::Usage("give --keys and/or --fingerprints".into()));
            }
            crate::cli::unlock_if_needed(phone, secrets)?;
            let keys = keys.as_ref().map(read_file).transpose()?.map(Secret::new);
            let fingerprints = fingerprints.as_ref().map(read_file).transpose()?;
            phone.execute_blocking(Command::OtrImport { keys, fingerprints })?;
            out.record("imported", &[]);
        }
        OtrCmd::Export { keys, fingerprints } => {
            crate::cli::unlock_if_needed(phone, secrets)?;
            let Reply::OtrFiles {
                keys: k,
                fingerprints: f,
            } = phone.execute_blocking(Command::OtrExport)?
            else {
                return Err(CoreError::Stopped.into());
            };
            write_private(&keys, k.expose().as_bytes())?;
            write_private(&fingerprints, f.as_bytes())?;
            out.record(
                "exported",
                &[
                    ("keys", keys.display().to_string().into()),
                    ("fingerprints", fingerprints.display().to_string().into()),
                ],
            );
        }
    }
    Ok(())
}
