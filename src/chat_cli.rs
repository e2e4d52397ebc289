//! `hushphone xmpp ...`: chat accounts, roster and messages from the command line, each
//! result or event one line (or one JSON object with --json).

use crate::calls::connect;
use crate::cli::{CliError, Out, Secrets, find_account};
use clap::{Args, Subcommand};
use hush_core::command::RequestAnswer;
use hush_core::model::{AccountSettings, XmppSettings};
use hush_core::snapshot::{ChatLine, ContactView, Presence, SmpView, Subscription};
use hush_core::{AccountId, ChatSecurity, Command, CoreError, Event, NewAccount, Phone, Reply};
use serde_json::Value;
use std::time::{Duration, Instant};
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
    Otr(crate::otr_cli::OtrCmd),
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
pub(crate) struct AccountArg {
    /// The account (id or address).
    #[arg(long)]
    pub(crate) account: String,
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

fn presence_text(p: Presence) -> &'static str {
    match p {
        Presence::Available => "available",
        Presence::Away => "away",
        Presence::DoNotDisturb => "dnd",
        Presence::Offline => "offline",
    }
}

fn contact(out: &Out, c: &ContactView) {
    let sub = match c.subscription {
        Subscription::WaitingForAuthorization => "waiting-for-authorization",
        Subscription::RequestReceived => "request-received",
        Subscription::Authorized => "authorized",
        Subscription::None => "none",
    };
    let mut f = vec![
        ("account", Value::from(c.account.0)),
        ("address", c.address.clone().into()),
        ("presence", presence_text(c.presence).into()),
        ("subscription", sub.into()),
    ];
    if let Some(a) = &c.alias {
        f.push(("alias", a.clone().into()));
    }
    if let Some(g) = &c.group {
        f.push(("group", g.clone().into()));
    }
    out.record("contact", &f);
}

fn line(out: &Out, kind: &str, account: AccountId, place: (&str, &str), l: &ChatLine) {
    out.record(
        kind,
        &[
            ("account", account.0.into()),
            (place.0, place.1.into()),
            ("from", l.sender.clone().into()),
            ("id", l.id.clone().into()),
            ("delayed", l.delayed.into()),
            ("encrypted", l.encrypted.into()),
            ("body", l.body.clone().into()),
        ],
    );
}

fn security_text(s: ChatSecurity) -> &'static str {
    match s {
        ChatSecurity::NotPrivate => "not-private",
        ChatSecurity::PrivateUnverified => "private-unverified",
        ChatSecurity::PrivateVerified => "private-verified",
        ChatSecurity::Finished => "finished",
    }
}

fn smp_text(s: &SmpView) -> (&'static str, String) {
    match s {
        SmpView::Asked(q) => ("asked", q.clone()),
        SmpView::SecretAsked => ("secret-asked", String::new()),
        SmpView::InProgress(p) => ("in-progress", p.to_string()),
        SmpView::Succeeded => ("succeeded", String::new()),
        SmpView::Failed => ("failed", String::new()),
        SmpView::Aborted => ("aborted", String::new()),
    }
}

/// Prints a chat event; returns true for an incoming message.
pub(crate) fn print(out: &Out, ev: &Event) -> bool {
    match ev {
        Event::ChatLine {
            account,
            peer,
            line: l,
        } if l.notice => out.record(
            "notice",
            &[
                ("account", account.0.into()),
                ("peer", peer.clone().into()),
                ("text", l.body.clone().into()),
            ],
        ),
        Event::ChatLine {
            account,
            peer,
            line: l,
        } if !l.from_me => {
            line(out, "message", *account, ("peer", peer), l);
            return true;
        }
        Event::ChatLine {
            account,
            peer,
            line: l,
        } if l.held => out.record(
            "held",
            &[
                ("account", account.0.into()),
                ("peer", peer.clone().into()),
                ("id", l.id.clone().into()),
            ],
        ),
        Event::ChatSecurity {
            account,
            peer,
            security,
            fingerprint,
        } => out.record(
            "security",
            &[
                ("account", account.0.into()),
                ("peer", peer.clone().into()),
                ("state", security_text(*security).into()),
                (
                    "fingerprint",
                    fingerprint.clone().unwrap_or_default().into(),
                ),
            ],
        ),
        Event::OtrFingerprint {
            account,
            peer,
            fingerprint,
            changed,
        } => out.record(
            "peer-fingerprint",
            &[
                ("account", account.0.into()),
                ("peer", peer.clone().into()),
                ("fingerprint", fingerprint.clone().into()),
                ("changed", (*changed).into()),
            ],
        ),
        Event::Smp {
            account,
            peer,
            progress,
        } => {
            let (state, detail) = smp_text(progress);
            out.record(
                "smp",
                &[
                    ("account", account.0.into()),
                    ("peer", peer.clone().into()),
                    ("state", state.into()),
                    ("detail", detail.into()),
                ],
            );
        }
        Event::OtrKey {
            account,
            fingerprint,
        } => out.record(
            "key-generated",
            &[
                ("account", account.0.into()),
                ("fingerprint", fingerprint.clone().into()),
            ],
        ),
        Event::ChatDelivered { account, peer, id } => out.record(
            "delivered",
            &[
                ("account", account.0.into()),
                ("peer", peer.clone().into()),
                ("id", id.clone().into()),
            ],
        ),
        Event::Contact { contact: c, .. } => contact(out, c),
        Event::ContactRemoved { account, address } => out.record(
            "removed",
            &[
                ("account", account.0.into()),
                ("address", address.clone().into()),
            ],
        ),
        Event::SubscriptionRequest { account, from } => out.record(
            "request",
            &[("account", account.0.into()), ("from", from.clone().into())],
        ),
        Event::RoomJoined { account, room } => out.record(
            "joined",
            &[("account", account.0.into()), ("room", room.clone().into())],
        ),
        Event::RoomOccupants {
            account,
            room,
            occupants,
        } => out.record(
            "occupants",
            &[
                ("account", account.0.into()),
                ("room", room.clone().into()),
                ("nicks", occupants.join(",").into()),
            ],
        ),
        Event::RoomLine {
            account,
            room,
            line: l,
        } if !l.from_me => line(out, "room-message", *account, ("room", room), l),
        Event::ChatError { account, reason } => out.record(
            "error",
            &[
                ("account", account.0.into()),
                ("reason", reason.clone().into()),
            ],
        ),
        _ => {}
    }
    false
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

/// Follows events for `dur`, printing them; stops early when `done` says so.
pub(crate) fn follow(
    phone: &Phone,
    rx: &mut broadcast::Receiver<Event>,
    out: &Out,
    dur: Duration,
    mut done: impl FnMut(&Event) -> bool,
) -> bool {
    let deadline = Instant::now() + dur;
    while let Some(ev) = phone.next_event(rx, deadline.saturating_duration_since(Instant::now())) {
        print(out, &ev);
        if done(&ev) {
            return true;
        }
    }
    false
}

pub(crate) fn run(
    phone: &Phone,
    cmd: XmppCmd,
    secrets: &mut Secrets,
    out: &Out,
) -> Result<(), CliError> {
    let mut rx = phone.events();
    match cmd {
        XmppCmd::Otr(c) => crate::otr_cli::run(phone, c, secrets, out)?,
        XmppCmd::Register(args) => {
            let password = secrets.ask_new("Password for the new account")?;
            let remember = !args.no_remember;
            if remember && phone.snapshot().locked {
                crate::cli::unlock_if_needed(phone, secrets)?;
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
                crate::cli::unlock_if_needed(phone, secrets)?;
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
