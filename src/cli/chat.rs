//! `hushphone xmpp ...`: chat accounts, roster and messages from the command line, each
//! result or event one line (or one JSON object with --json).

use super::error::CliError;
use super::output::Out;
use super::secrets::Secrets;
use super::session::{AccountArg, connect, find_account, follow, unlock_if_needed};
use clap::{Args, Subcommand};
use hush_core::command::RequestAnswer;
use hush_core::model::{AccountSettings, XmppSettings};
use hush_core::snapshot::{Presence, Subscription};
use hush_core::{AccountId, Command, CoreError, Event, NewAccount, Phone, Reply};
use std::time::Duration;
use tokio::sync::broadcast;

#[derive(Subcommand, Debug)]
pub(crate) enum XmppCmd {
    /// Create an account on its server (in-band registration) and add it here.
    Register(RegisterArgs),
    /// Change an account's password on the server.
    Passwd {
        /// The account (id or address).
        #[arg(long)]
        account: String,
    },
    /// Print contacts and pending requests.
    Roster(AccountArg),
    /// Add a contact and ask to see their presence.
    Add {
        #[command(flatten)]
        account: AccountArg,
        /// The contact's address.
        jid: String,
        /// A name for them.
        #[arg(long)]
        alias: Option<String>,
        /// A group (created if new).
        #[arg(long)]
        group: Option<String>,
    },
    /// Rename a contact or move it to another group.
    Rename {
        #[command(flatten)]
        account: AccountArg,
        /// The contact's address.
        jid: String,
        /// New name.
        #[arg(long)]
        alias: Option<String>,
        /// New group.
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove a contact.
    Remove {
        #[command(flatten)]
        account: AccountArg,
        /// The contact's address.
        jid: String,
    },
    /// Let someone who asked see your presence.
    Authorize(RequestArgs),
    /// Refuse someone's request (they are told).
    Deny(RequestArgs),
    /// Leave someone's request unanswered (they keep waiting).
    Ignore(RequestArgs),
    /// Send a message and wait until the server has it.
    Send {
        #[command(flatten)]
        account: AccountArg,
        /// Recipient.
        jid: String,
        /// The text.
        text: String,
    },
    /// Stay online and print what arrives.
    Listen {
        #[command(flatten)]
        account: AccountArg,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
        /// Availability while listening.
        #[arg(long, value_enum, default_value = "available")]
        status: StatusArg,
    },
    /// Private conversations (OTR): keys, fingerprints, policies, authentication.
    #[command(subcommand)]
    Otr(super::otr::OtrCmd),
    /// Join (or create) a room, print who is there and what is said.
    Join {
        #[command(flatten)]
        account: AccountArg,
        /// `room@conference.server`.
        room: String,
        /// Your nickname.
        #[arg(long)]
        nick: String,
        /// The room has a password, or a new room should get one (asked for, or read
        /// with --stdin).
        #[arg(long)]
        password: bool,
        /// Say this once joined.
        #[arg(long)]
        say: Option<String>,
        /// Stay this many seconds.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
}

#[derive(Args, Debug)]
pub(crate) struct RequestArgs {
    #[command(flatten)]
    account: AccountArg,
    /// Who asked.
    jid: String,
    /// Seconds to wait for the request to arrive after logging in.
    #[arg(long, default_value_t = 10.0)]
    wait: f64,
}

#[derive(Args, Debug)]
pub(crate) struct RegisterArgs {
    /// The new address, `user@domain`.
    jid: String,
    /// Server `host:port` (default: the domain's SRV record).
    #[arg(long)]
    server: Option<String>,
    /// Trust a self-hosted server's certificate with this SHA-256 fingerprint.
    #[arg(long, value_name = "SHA256")]
    pin_cert: Option<String>,
    /// SOCKS5 proxy host:port (Tor: 127.0.0.1:9050).
    #[arg(long)]
    socks5: Option<String>,
    /// Do not save the password.
    #[arg(long)]
    no_remember: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum StatusArg {
    Available,
    Away,
    Dnd,
}

fn account_id(phone: &Phone, key: &str) -> Result<AccountId, CliError> {
    let accounts: Vec<_> = phone
        .snapshot()
        .accounts
        .iter()
        .map(|a| a.config.clone())
        .collect();
    find_account(&accounts, key)
}

pub(crate) fn run(
    phone: &Phone,
    cmd: XmppCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    let mut rx = phone.events();
    match cmd {
        XmppCmd::Otr(c) => super::otr::run(phone, c, secrets, out)?,
        XmppCmd::Register(args) => {
            let password = secrets.ask_new("Password for the new account")?;
            let remember = !args.no_remember;
            if remember && phone.snapshot().locked {
                unlock_if_needed(phone, secrets)?;
            }
            let pinned = match args.pin_cert {
                Some(p) => Some(
                    hush_signaling::xmpp::parse_fingerprint(&p)
                        .map(|fp| hush_signaling::xmpp::format_fingerprint(&fp))
                        .map_err(|e| CliError::Usage(e.to_string()))?,
                ),
                None => None,
            };
            let new = NewAccount {
                address: args.jid,
                display_name: None,
                password: Some(password),
                remember_password: remember,
                settings: AccountSettings::Xmpp(XmppSettings {
                    server: args.server,
                    pinned_cert_sha256: pinned,
                    socks5_proxy: args.socks5,
                    otr_policy: Default::default(),
                }),
            };
            if let Reply::Account(a) = phone.execute_blocking(Command::RegisterXmpp(new))? {
                out.record(
                    "account",
                    &[
                        ("id", a.id.0.into()),
                        ("protocol", "xmpp".into()),
                        ("address", a.address.into()),
                        ("created", true.into()),
                    ],
                );
            }
        }
        XmppCmd::Passwd { account } => {
            let id = account_id(phone, &account)?;
            let remembered = phone
                .snapshot()
                .accounts
                .iter()
                .any(|a| a.config.id == id && a.config.remember_password);
            if remembered {
                unlock_if_needed(phone, secrets)?;
            }
            let old = if remembered {
                None
            } else {
                Some(secrets.ask("Current password")?)
            };
            let new = secrets.ask_new("New password")?;
            phone.execute_blocking(Command::ChangeXmppPassword {
                account: id,
                old,
                new,
            })?;
            out.record(
                "password",
                &[("account", id.0.into()), ("state", "changed".into())],
            );
        }
        XmppCmd::Roster(a) => {
            let id = connect(phone, &mut rx, &a.account, secrets, out)?;
            // The roster arrives right after login; give it a moment to settle.
            follow(phone, &mut rx, out, Duration::from_millis(1500), |_| false);
            let snap = phone.snapshot();
            for r in snap.requests.iter().filter(|r| r.account == id) {
                out.record(
                    "request",
                    &[
                        ("account", id.0.into()),
                        ("from", r.from.clone().into()),
                        ("ignored", r.ignored.into()),
                    ],
                );
            }
        }
        XmppCmd::Add {
            account,
            jid,
            alias,
            group,
        } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            let who = jid.clone();
            phone.execute_blocking(Command::AddContact {
                account: id,
                address: jid,
                alias,
                group,
            })?;
            let ok = follow(
                phone,
                &mut rx,
                out,
                Duration::from_secs(10),
                |e| matches!(e, Event::Contact { contact, .. } if contact.address == who && contact.subscription != Subscription::None),
            );
            if !ok {
                return Err(
                    CoreError::Call("the server did not confirm the new contact".into()).into(),
                );
            }
        }
        XmppCmd::Rename {
            account,
            jid,
            alias,
            group,
        } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            let (want_alias, who) = (alias.clone(), jid.clone());
            phone.execute_blocking(Command::UpdateContact {
                account: id,
                address: jid,
                alias,
                group,
            })?;
            follow(
                phone,
                &mut rx,
                out,
                Duration::from_secs(10),
                |e| matches!(e, Event::Contact { contact, .. } if contact.address == who && contact.alias == want_alias),
            );
        }
        XmppCmd::Remove { account, jid } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            let who = jid.clone();
            phone.execute_blocking(Command::RemoveContact {
                account: id,
                address: jid,
            })?;
            follow(
                phone,
                &mut rx,
                out,
                Duration::from_secs(10),
                |e| matches!(e, Event::ContactRemoved { address, .. } if *address == who),
            );
        }
        XmppCmd::Authorize(r) => answer(phone, &mut rx, r, RequestAnswer::Authorize, secrets, out)?,
        XmppCmd::Deny(r) => answer(phone, &mut rx, r, RequestAnswer::Deny, secrets, out)?,
        XmppCmd::Ignore(r) => answer(phone, &mut rx, r, RequestAnswer::Ignore, secrets, out)?,
        XmppCmd::Send { account, jid, text } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            phone.execute_blocking(Command::SendChat {
                account: id,
                to: jid,
                body: text,
            })?;
            if !follow(phone, &mut rx, out, Duration::from_secs(15), |e| {
                matches!(e, Event::ChatDelivered { .. })
            }) {
                return Err(CoreError::Call(
                    "the server did not take the message within 15 s".into(),
                )
                .into());
            }
        }
        XmppCmd::Listen {
            account,
            duration,
            count,
            status,
        } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            let presence = match status {
                StatusArg::Available => Presence::Available,
                StatusArg::Away => Presence::Away,
                StatusArg::Dnd => Presence::DoNotDisturb,
            };
            phone.execute_blocking(Command::SetPresence {
                account: id,
                presence,
            })?;
            let dur = duration
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::from_secs(365 * 24 * 3600));
            let mut n = 0;
            follow(phone, &mut rx, out, dur, |e| {
                if matches!(e, Event::ChatLine { line, .. } if !line.from_me) {
                    n += 1;
                }
                count.is_some_and(|c| n >= c)
            });
        }
        XmppCmd::Join {
            account,
            room,
            nick,
            password,
            say,
            duration,
        } => {
            let id = connect(phone, &mut rx, &account.account, secrets, out)?;
            let password = if password {
                Some(secrets.ask("Room password")?)
            } else {
                None
            };
            let r = room.clone();
            phone.execute_blocking(Command::JoinRoom {
                account: id,
                room: room.clone(),
                nick,
                password,
            })?;
            let joined = follow(phone, &mut rx, out, Duration::from_secs(10), |e| {
                matches!(e, Event::RoomJoined { room, .. } if *room == r)
                    || matches!(e, Event::ChatError { .. })
            });
            if !joined
                || !phone
                    .snapshot()
                    .rooms
                    .iter()
                    .any(|x| x.room == room && x.joined)
            {
                return Err(CoreError::Call(format!("could not join {room}")).into());
            }
            if let Some(text) = say {
                phone.execute_blocking(Command::SendRoom {
                    account: id,
                    room: room.clone(),
                    body: text,
                })?;
            }
            follow(
                phone,
                &mut rx,
                out,
                Duration::from_secs_f64(duration),
                |_| false,
            );
            phone.execute_blocking(Command::LeaveRoom { account: id, room })?;
        }
    }
    Ok(())
}

fn answer(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    r: RequestArgs,
    answer: RequestAnswer,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    let id = connect(phone, rx, &r.account.account, secrets, out)?;
    let who = r.jid.clone();
    let listed = |p: &Phone| {
        p.snapshot()
            .requests
            .iter()
            .any(|q| q.account == id && q.from == who)
    };
    if !listed(phone) {
        follow(
            phone,
            rx,
            out,
            Duration::from_secs_f64(r.wait),
            |e| matches!(e, Event::SubscriptionRequest { from, .. } if *from == who),
        );
    }
    if !listed(phone) {
        return Err(
            CoreError::Call(format!("{} has not asked to see your presence", r.jid)).into(),
        );
    }
    phone.execute_blocking(Command::AnswerRequest {
        account: id,
        from: r.jid.clone(),
        answer,
    })?;
    let word = match answer {
        RequestAnswer::Authorize => "authorized",
        RequestAnswer::Deny => "denied",
        RequestAnswer::Ignore => "ignored",
    };
    out.record(
        "request",
        &[
            ("account", id.0.into()),
            ("from", r.jid.into()),
            ("answer", word.into()),
        ],
    );
    // Let the answer leave before the process exits.
    follow(phone, rx, out, Duration::from_millis(500), |_| false);
    Ok(())
}
