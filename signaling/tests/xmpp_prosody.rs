//! XMPP against a real Prosody started by the harness: in-band registration, login,
//! password change, and the failures that must stop instead of retrying.

use futures::StreamExt;
use hush_harness::Prosody;
use hush_signaling::SignalingError;
use hush_signaling::xmpp::{
    BareJid, HushConnector, Trust, cert_fingerprint_from_pem, change_password, register_account,
    verify_login,
};
use std::time::{Duration, Instant};

fn pinned(server: &Prosody) -> HushConnector {
    let pem = std::fs::read(server.cert_path()).expect("server cert");
    let fp = cert_fingerprint_from_pem(&pem).expect("fingerprint");
    HushConnector::direct("127.0.0.1", server.port(), Trust::Pinned(fp))
}

fn jid(s: &str) -> BareJid {
    s.parse().expect("valid jid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_registered_account_logs_in() {
    let server = Prosody::start().expect("prosody starts");
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

    // A full session reaches Online with a bound resource.
    let mut client = tokio_xmpp::Client::new_with_connector(
        jid("alice@localhost"),
        "alice-pass-1".to_owned(),
        c.clone(),
        tokio_xmpp::xmlstream::Timeouts::tight(),
    );
    let online = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = client.next().await {
            if let tokio_xmpp::Event::Online { bound_jid, .. } = ev {
                return Some(bound_jid);
            }
        }
        None
    })
    .await
    .expect("online within 10 s")
    .expect("online event");
    assert_eq!(online.to_bare(), jid("alice@localhost"));
    let _ = client.send_end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_fast_and_password_change_works() {
    let server = Prosody::start().expect("prosody starts");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_refused() {
    let server = Prosody::start().expect("prosody starts");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_through_a_socks5_proxy_with_remote_dns() {
    let server = Prosody::start().expect("prosody starts");
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
