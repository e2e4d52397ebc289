//! What the chat tests share: an account registered in-band at a real XMPP server and
//! brought online, and bounded waits for the phone's events.

use hush_core::model::{AccountSettings, OtrPolicySetting, XmppSettings};
use hush_core::snapshot::AccountStatus;
use hush_core::{AccountId, Command, Event, NewAccount, Phone, Reply, Secret};
use hush_harness::XmppServer;
use std::time::{Duration, Instant};

pub fn settings(server: &XmppServer) -> XmppSettings {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    let fp = hush_signaling::xmpp::cert_fingerprint_from_pem(&pem).expect("fp");
    XmppSettings {
        server: Some(format!("127.0.0.1:{}", server.port())),
        pinned_cert_sha256: Some(hush_signaling::xmpp::format_fingerprint(&fp)),
        socks5_proxy: None,
        otr_policy: Default::default(),
    }
}

/// An account registered in-band at `server`, with the default OTR policy.
#[allow(dead_code)] // not every test binary that shares this module uses it
pub fn register(phone: &Phone, server: &XmppServer, user: &str) -> AccountId {
    register_with(phone, server, user, OtrPolicySetting::default())
}

/// An account registered in-band at `server`, with this OTR policy.
pub fn register_with(
    phone: &Phone,
    server: &XmppServer,
    user: &str,
    otr_policy: OtrPolicySetting,
) -> AccountId {
    let new = NewAccount {
        address: format!("{user}@localhost"),
        display_name: None,
        password: Some(Secret::new(format!("{user}-secret"))),
        remember_password: true,
        settings: AccountSettings::Xmpp(XmppSettings {
            otr_policy,
            ..settings(server)
        }),
    };
    match phone
        .execute_blocking(Command::RegisterXmpp(new))
        .expect("in-band registration")
    {
        Reply::Account(a) => a.id,
        other => panic!("{other:?}"),
    }
}

pub fn wait<T>(
    phone: &Phone,
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    what: &str,
    f: impl Fn(&Event) -> Option<T>,
) -> T {
    wait_up_to(phone, rx, what, Duration::from_secs(15), f)
}

/// As [`wait`], with its own bound.
pub fn wait_up_to<T>(
    phone: &Phone,
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    what: &str,
    limit: Duration,
    f: impl Fn(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    while let Some(ev) = phone.next_event(rx, deadline.saturating_duration_since(Instant::now())) {
        if let Some(v) = f(&ev) {
            return v;
        }
    }
    panic!("no {what} within {} s", limit.as_secs())
}

pub fn online(phone: &Phone, rx: &mut tokio::sync::broadcast::Receiver<Event>, account: AccountId) {
    phone
        .execute_blocking(Command::Connect {
            account,
            password: None,
        })
        .expect("connect");
    wait(phone, rx, "online", |e| match e {
        Event::AccountStatus {
            account: a,
            status: AccountStatus::Online,
        } if *a == account => Some(()),
        Event::AccountStatus {
            status: AccountStatus::Error(e),
            ..
        } => panic!("{e}"),
        _ => None,
    });
    // The account's first OTR key is made while it logs in; messages to it wait for
    // the key, so tests that time them start once it is there.
    let keyed = || {
        phone
            .snapshot()
            .otr_keys
            .iter()
            .any(|k| k.account == account)
    };
    if !keyed() {
        wait(phone, rx, "our OTR key", |e| match e {
            Event::OtrKey { account: a, .. } if *a == account => Some(()),
            _ => None,
        });
    }
}
