//! XMPP logins against real Prosody and ejabberd started by the harness: in-band
//! registration, login, password change, and the failures that must stop instead of
//! retrying, each told apart in words.

use hush_harness::{ServerKind, XmppServer, per_server};
use hush_signaling::SignalingError;
use hush_signaling::xmpp::account;
use hush_signaling::xmpp::chat::XmppEvent;
use hush_signaling::xmpp::{
    BareJid, HushConnector, Trust, cert_fingerprint_from_pem, change_password, register_account,
    verify_login,
};
use std::time::{Duration, Instant};

fn pinned(server: &XmppServer) -> HushConnector {
    let pem = std::fs::read(server.cert_path()).expect("server cert");
    let fp = cert_fingerprint_from_pem(&pem).expect("fingerprint");
    HushConnector::direct("127.0.0.1", server.port(), Trust::Pinned(fp))
}

fn jid(s: &str) -> BareJid {
    s.parse().expect("valid jid")
}

/// Waits (at most `limit`) until the account is online, or has stopped for good: then
/// with its reason.
async fn online_or_stopped(
    events: &mut tokio::sync::mpsc::Receiver<XmppEvent>,
    limit: Duration,
) -> Result<(), String> {
    tokio::time::timeout(limit, async {
        while let Some(ev) = events.recv().await {
            match ev {
                XmppEvent::Online { .. } => return Ok(()),
                XmppEvent::Offline {
                    reason,
                    permanent: true,
                } => return Err(reason),
                _ => {}
            }
        }
        Err("the account ended".into())
    })
    .await
    .unwrap_or_else(|_| panic!("neither online nor stopped within {limit:?}"))
}

per_server!(
    in_band_registered_account_logs_in,
    in_band_registered_account_logs_in_on
);
async fn in_band_registered_account_logs_in_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let c = pinned(&server);
    register_account(&c, &jid("alice@localhost"), "alice-pass-1")
        .await
        .expect("register");
    assert!(matches!(
        register_account(&c, &jid("alice@localhost"), "other").await,
        Err(SignalingError::UsernameTaken)
    ));
    verify_login(&c, &jid("alice@localhost"), "alice-pass-1")
        .await
        .expect("login");

    // A full session reaches Online.
    let (handle, mut events) =
        account::start(c.clone(), jid("alice@localhost"), "alice-pass-1".to_owned());
    let online = online_or_stopped(&mut events, Duration::from_secs(10)).await;
    assert_eq!(online, Ok(()), "{}", server.log_tail());
    handle.command(account::XmppCommand::Stop);
}

per_server!(
    wrong_password_fails_fast_and_password_change_works,
    wrong_password_fails_fast_and_password_change_works_on
);
async fn wrong_password_fails_fast_and_password_change_works_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let c = pinned(&server);
    register_account(&c, &jid("bob@localhost"), "bob-pass-1")
        .await
        .expect("register");
    let start = Instant::now();
    let r = verify_login(&c, &jid("bob@localhost"), "not-bobs").await;
    assert!(matches!(r, Err(SignalingError::AuthFailed)), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "wrong password took {:?}",
        start.elapsed()
    );
    assert!(r.err().is_some_and(|e| e.is_permanent()));

    change_password(&c, &jid("bob@localhost"), "bob-pass-1", "bob-pass-2")
        .await
        .expect("change password");
    assert!(matches!(
        verify_login(&c, &jid("bob@localhost"), "bob-pass-1").await,
        Err(SignalingError::AuthFailed)
    ));
    verify_login(&c, &jid("bob@localhost"), "bob-pass-2")
        .await
        .expect("new password works");
}

per_server!(
    untrusted_certificate_is_refused,
    untrusted_certificate_is_refused_on
);
async fn untrusted_certificate_is_refused_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    // The self-signed cert is not in the system roots...
    let system = HushConnector::direct("127.0.0.1", server.port(), Trust::SystemRoots);
    let r = register_account(&system, &jid("carol@localhost"), "pw-carol-1").await;
    let pem = std::fs::read(server.cert_path()).expect("cert");
    let real =
        hush_signaling::xmpp::format_fingerprint(&cert_fingerprint_from_pem(&pem).expect("fp"));
    match &r {
        Err(SignalingError::UntrustedCertificate(why)) => {
            assert!(
                why.contains(&real),
                "the refusal shows the fingerprint to pin: {why}"
            )
        }
        other => panic!("{other:?}"),
    }
    // ...and a pin of some other certificate does not match it.
    let wrong = HushConnector::direct("127.0.0.1", server.port(), Trust::Pinned([7u8; 32]));
    let r = verify_login(&wrong, &jid("carol@localhost"), "pw-carol-1").await;
    assert!(
        matches!(r, Err(SignalingError::UntrustedCertificate(_))),
        "{r:?}"
    );
    assert!(r.err().is_some_and(|e| e.is_permanent()));
}

per_server!(
    login_through_a_socks5_proxy_with_remote_dns,
    login_through_a_socks5_proxy_with_remote_dns_on
);
async fn login_through_a_socks5_proxy_with_remote_dns_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let mut proxy = hush_harness::Socks5::start().expect("microsocks");
    let pem = std::fs::read(server.cert_path()).expect("server cert");
    let fp = cert_fingerprint_from_pem(&pem).expect("fingerprint");
    // The host name goes to the proxy unresolved.
    let via_proxy = HushConnector::new(
        hush_signaling::xmpp::Route::Direct {
            host: "localhost".into(),
            port: server.port(),
        },
        Trust::Pinned(fp),
        Some(proxy.address()),
    );
    register_account(&via_proxy, &jid("tor@localhost"), "tor-pass-1")
        .await
        .expect("register via proxy");
    verify_login(&via_proxy, &jid("tor@localhost"), "tor-pass-1")
        .await
        .expect("login via proxy");
    proxy.stop();
    match verify_login(&via_proxy, &jid("tor@localhost"), "tor-pass-1").await {
        Err(SignalingError::Unreachable(why)) => assert!(why.contains("SOCKS5"), "{why}"),
        other => panic!("without the proxy there is no way through: {other:?}"),
    }
}

fn ejabberd(options: hush_harness::EjabberdOptions) -> XmppServer {
    XmppServer::Ejabberd(hush_harness::Ejabberd::start_with(options).expect("ejabberd starts"))
}

/// ejabberd 23.01 offers SCRAM `-PLUS` but announces no binding type (XEP-0440) and
/// checks `tls-unique`, which we cannot make: the login goes unbound with the strongest
/// hash instead of failing, and the server's log names what was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_without_announced_bindings_gets_the_strongest_unbound_scram() {
    let server = ejabberd(Default::default());
    let c = pinned(&server);
    register_account(&c, &jid("dora@localhost"), "dora-pass-1")
        .await
        .expect("register");
    verify_login(&c, &jid("dora@localhost"), "dora-pass-1")
        .await
        .expect("login");
    let XmppServer::Ejabberd(e) = &server else {
        unreachable!()
    };
    assert!(
        e.wait_log(
            "Accepted c2s SCRAM-SHA-512 authentication for dora@localhost",
            Duration::from_secs(10)
        ),
        "{}",
        e.log_tail()
    );
    assert!(!e.log().contains("Invalid channel binding"), "{}", e.log());
}

/// An account the server's rules keep out (its password is right; the session is
/// refused) stops with a policy refusal in words, not a wrong password, and is not
/// retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barred_account_is_refused_by_policy_in_words() {
    let server = ejabberd(Default::default());
    let c = pinned(&server);
    register_account(&c, &jid("barred@localhost"), "barred-pass-1")
        .await
        .expect("register");
    let (handle, mut events) = account::start(
        c.clone(),
        jid("barred@localhost"),
        "barred-pass-1".to_owned(),
    );
    let r = online_or_stopped(&mut events, Duration::from_secs(15)).await;
    handle.command(account::XmppCommand::Stop);
    let reason = r.expect_err("no session for barred");
    assert!(
        reason.contains("refused the login by its policy"),
        "{reason}"
    );
    assert!(reason.contains("Access denied"), "{reason}");
    assert!(!reason.contains("wrong username"), "{reason}");
}

/// After too many failed logins ejabberd blocks the address: that is a rate limit in
/// words, distinct from the wrong password that caused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_failed_logins_are_told_as_a_rate_limit() {
    let server = ejabberd(hush_harness::EjabberdOptions {
        max_auth_failures: Some(2),
    });
    let c = pinned(&server);
    register_account(&c, &jid("eve@localhost"), "eve-pass-1")
        .await
        .expect("register");
    let r = verify_login(&c, &jid("eve@localhost"), "guess").await;
    assert!(matches!(r, Err(SignalingError::AuthFailed)), "{r:?}");
    // The guess that reaches the limit is already answered with the block.
    let r = verify_login(&c, &jid("eve@localhost"), "guess").await;
    assert!(
        matches!(r, Err(SignalingError::LoginRateLimited(_))),
        "{r:?}"
    );
    // And so is the right password while the block lasts.
    let r = verify_login(&c, &jid("eve@localhost"), "eve-pass-1").await;
    match &r {
        Err(e @ SignalingError::LoginRateLimited(_)) => {
            assert!(e.is_permanent());
            assert!(e.to_string().contains("too many"), "{e}");
        }
        other => panic!("{other:?}\n{}", server.log_tail()),
    }
}
