//! How each event of the phone is printed: one record per event, the same words for
//! the same thing whichever command prints it.

use super::output::Out;
use hush_core::snapshot::{
    AccountStatus, CallId, CallState, ChatLine, ContactView, Presence, SmpView, Subscription,
};
use hush_core::{AccountId, CallSecurity, ChatSecurity, Event};
use serde_json::Value;

/// An account's status: `status account=N status=offline|connecting|retrying|online|error`,
/// for SIP and XMPP accounts alike.
pub(crate) fn account_status(out: &Out, account: AccountId, status: &AccountStatus) {
    let (s, reason) = match status {
        AccountStatus::Offline => ("offline", None),
        AccountStatus::Connecting => ("connecting", None),
        AccountStatus::Retrying(e) => ("retrying", Some(e.clone())),
        AccountStatus::Online => ("online", None),
        AccountStatus::Error(e) => ("error", Some(e.clone())),
    };
    let mut f = vec![("account", Value::from(account.0)), ("status", s.into())];
    if let Some(r) = reason {
        f.push(("reason", r.into()));
    }
    out.record("status", &f);
}

pub(crate) fn call_id(id: CallId) -> Value {
    id.0.into()
}

/// Prints a call (or account) event as a line; every command prints them the same way.
pub(crate) fn call_event(out: &Out, ev: &Event) {
    match ev {
        Event::AccountStatus { account, status } => account_status(out, *account, status),
        Event::CallIncoming { call, from } => {
            out.record(
                "incoming",
                &[("call", call_id(*call)), ("from", from.clone().into())],
            );
        }
        Event::CallState { call, state } => {
            let (s, reason) = match state {
                CallState::Calling => ("calling", None),
                CallState::Ringing => ("ringing", None),
                CallState::Incoming => ("incoming", None),
                CallState::Connected => ("connected", None),
                CallState::OnHold => ("on-hold", None),
                CallState::Ended(r) => ("ended", Some(r.clone())),
            };
            let mut f = vec![("call", call_id(*call)), ("state", s.into())];
            if let Some(r) = reason {
                f.push(("reason", r.into()));
            }
            out.record("call", &f);
        }
        Event::CallAlgorithms { call, algorithms } => {
            out.record(
                "zrtp",
                &[
                    ("call", call_id(*call)),
                    ("algorithms", algorithms.clone().into()),
                ],
            );
        }
        Event::CallSecurity { call, security } => {
            let mut f = vec![("call", call_id(*call))];
            match security {
                CallSecurity::Cleartext => f.push(("state", "cleartext".into())),
                CallSecurity::Negotiating => f.push(("state", "negotiating".into())),
                CallSecurity::Secure { sas, verified } => {
                    f.push(("state", "secure".into()));
                    f.push(("sas", sas.clone().into()));
                    f.push(("verified", (*verified).into()));
                }
                CallSecurity::CacheMismatch { sas } => {
                    f.push(("state", "cache-mismatch".into()));
                    f.push(("sas", sas.clone().into()));
                }
                CallSecurity::NewKey { sas } => {
                    f.push(("state", "new-key".into()));
                    f.push(("sas", sas.clone().into()));
                    f.push(("warning", security.label().into()));
                }
                CallSecurity::Failed(r) => {
                    f.push(("state", "failed".into()));
                    f.push(("reason", r.clone().into()));
                }
            }
            out.record("security", &f);
        }
        Event::CallStats { call, kind, stats } => {
            let mut f = vec![
                ("call", call_id(*call)),
                ("stream", stream_word(*kind).into()),
                ("sent", stats.packets_sent.into()),
                ("received", stats.packets_received.into()),
                ("lost", stats.packets_lost.into()),
                ("jitter_ms", stats.jitter_ms.into()),
                ("refused", stats.refused.into()),
            ];
            if let Some(rtt) = stats.rtt_ms {
                f.push(("rtt_ms", rtt.into()));
            }
            if let Some(v) = stats.video {
                f.extend([
                    ("frames_sent", v.frames_sent.into()),
                    ("frames_received", v.frames_received.into()),
                    ("frames_decoded", v.frames_decoded.into()),
                    ("key_frames_asked", v.key_frames_asked.into()),
                    ("size", format!("{}x{}", v.width, v.height).into()),
                    ("fps", v.fps.into()),
                ]);
                if let Some(c) = v.capture {
                    f.extend([
                        ("capture_fps", c.fps.into()),
                        ("captured", c.captured.into()),
                        ("unchanged", c.unchanged.into()),
                    ]);
                }
            }
            out.record("stats", &f);
        }
        Event::CallStreamEnded { call, kind, reason } => out.record(
            "stream",
            &[
                ("call", call_id(*call)),
                ("kind", stream_word(*kind).into()),
                ("state", "ended".into()),
                ("reason", reason.clone().into()),
            ],
        ),
        Event::CallDtmf { call, key } => out.record(
            "dtmf",
            &[("call", call_id(*call)), ("key", key.to_string().into())],
        ),
        Event::CommandFailed {
            command,
            error,
            permanent,
        } => {
            out.record(
                "error",
                &[
                    ("command", (*command).into()),
                    ("reason", error.clone().into()),
                    ("permanent", (*permanent).into()),
                ],
            );
        }
        _ => {}
    }
}

fn presence_text(p: Presence) -> &'static str {
    match p {
        Presence::Available => "available",
        Presence::Away => "away",
        Presence::DoNotDisturb => "dnd",
        Presence::Offline => "offline",
    }
}

pub(crate) fn contact(out: &Out, c: &ContactView) {
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
pub(crate) fn chat_event(out: &Out, ev: &Event) -> bool {
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

/// A stream's kind as the records name it.
pub(crate) fn stream_word(kind: hush_core::snapshot::StreamKind) -> &'static str {
    match kind {
        hush_core::snapshot::StreamKind::Audio => "audio",
        hush_core::snapshot::StreamKind::Video => "video",
        hush_core::snapshot::StreamKind::Screen => "screen",
    }
}
