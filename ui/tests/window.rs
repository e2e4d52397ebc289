//! The window against a real core: the echo test's SAS comparison (a right pick
//! verifies, a wrong pick ends the call and says why), and private chat against real
//! Prosody and ejabberd (padlock states, the fingerprint field going red then green, an SMP failure
//! shown), contacts and their requests, and the account form's errors.

use eframe::egui::accesskit::Toggled;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use hush_core::model::{AccountSettings, XmppSettings};
use hush_core::snapshot::{AccountStatus, CallState, SmpView};
use hush_core::{
    AccountId, CallSecurity, ChatSecurity, Command, Event, NewAccount, Phone, Profile, Reply,
    Secret,
};
use hush_harness::{ServerKind, XmppServer, per_server_blocking};
use hush_ui::HushApp;

mod common;
use common::{has, tone, until};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn echo_call(pick_right: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Arc::new(Phone::start(Profile::open(dir.path()).expect("profile")).expect("phone"));
    let mut app = HushApp::new(phone.clone()).with_audio(tone());
    let mut h = Harness::new_ui(|ui| app.ui(ui));
    h.run_ok();
    h.get_by_label("Try a secure echo test").click();
    until(&mut h, &phone, "a secure echo call", |h| {
        has(h, "Security code")
    });
    let call = phone
        .snapshot()
        .calls
        .iter()
        .find(|c| !c.automatic)
        .cloned()
        .expect("our call");
    let CallSecurity::Secure {
        sas,
        verified: false,
    } = &call.security
    else {
        panic!("{:?}", call.security)
    };
    // We called: we read the first half and hear the second.
    let hear = sas
        .chars()
        .skip(sas.chars().count() / 2)
        .collect::<String>()
        .to_uppercase();
    assert!(has(
        &h,
        &format!("Read this to your peer: {}", sas[..2].to_uppercase())
    ));
    let pick = if pick_right {
        format!("They said {hear}")
    } else {
        h.query_all_by_label_contains("They said ")
            .map(|n| n.accesskit_node().label().unwrap_or_default().to_string())
            .find(|l| *l != format!("They said {hear}"))
            .expect("a wrong choice")
    };
    let mut rx = phone.events();
    h.get_by_label(&pick).click();
    if pick_right {
        until(&mut h, &phone, "verified", |h| {
            has(h, "Encrypted and verified")
        });
        assert!(matches!(
            phone
                .snapshot()
                .calls
                .iter()
                .find(|c| c.id == call.id)
                .map(|c| c.security.clone()),
            Some(CallSecurity::Secure { verified: true, .. })
        ));
        // Settings list the verified peer and can withdraw it.
        h.get_by_label("Hang up").click();
        h.run_ok();
        h.get_by_label("Settings").click();
        until(&mut h, &phone, "the verified peer listed", |h| {
            has(h, "verified: echo@127.0.0.1")
        });
        // One entry per verified key: the echo peer's, named by its key id.
        let keys: Vec<String> = h
            .query_all_by_label_contains("Reset verification of echo@127.0.0.1 (key ")
            .map(|n| n.accesskit_node().label().unwrap_or_default().to_string())
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        h.get_by_label(&keys[0]).click();
        until(&mut h, &phone, "the verification withdrawn", |h| {
            has(h, "No verified peers yet")
        });
    } else {
        until(&mut h, &phone, "the call ended", |h| {
            has(h, "Ended: SAS mismatch")
        });
        let mut reason = None;
        while let Some(e) = phone.next_event(&mut rx, Duration::from_millis(10)) {
            if let Event::CallState {
                call: c,
                state: CallState::Ended(r),
            } = e
                && c == call.id
            {
                reason = Some(r);
            }
        }
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("SAS mismatch")),
            "{reason:?}"
        );
    }
}

#[test]
fn echo_test_right_sas_pick_verifies() {
    echo_call(true);
}

#[test]
fn echo_test_wrong_sas_pick_ends_the_call() {
    echo_call(false);
}

fn xmpp(server: &XmppServer) -> XmppSettings {
    let pem = std::fs::read(server.cert_path()).expect("cert");
    let fp = hush_signaling::xmpp::cert_fingerprint_from_pem(&pem).expect("fp");
    XmppSettings {
        server: Some(format!("127.0.0.1:{}", server.port())),
        pinned_cert_sha256: Some(hush_signaling::xmpp::format_fingerprint(&fp)),
        ..Default::default()
    }
}

/// A phone with a new in-band registered account, online.
fn online(dir: &std::path::Path, server: &XmppServer, user: &str) -> (Arc<Phone>, AccountId) {
    let phone = Arc::new(Phone::start(Profile::open(dir).expect("profile")).expect("phone"));
    let mut rx = phone.events();
    let Ok(Reply::Account(a)) = phone.execute_blocking(Command::RegisterXmpp(NewAccount {
        address: format!("{user}@localhost"),
        display_name: None,
        password: Some(Secret::new(format!("{user}-ui-pw"))),
        remember_password: true,
        settings: AccountSettings::Xmpp(xmpp(server)),
    })) else {
        panic!("register {user}")
    };
    phone
        .execute_blocking(Command::Connect {
            account: a.id,
            password: None,
        })
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(e) =
        phone.next_event(&mut rx, deadline.saturating_duration_since(Instant::now()))
    {
        if matches!(
            e,
            Event::AccountStatus {
                status: AccountStatus::Online,
                ..
            }
        ) {
            return (phone, a.id);
        }
    }
    panic!("{user} not online")
}

per_server_blocking!(
    chat_padlock_fingerprint_check_and_smp_failure,
    chat_padlock_fingerprint_check_and_smp_failure_on
);
fn chat_padlock_fingerprint_check_and_smp_failure_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, _) = online(&dir.path().join("a"), &server, "alice");
    let (bob, bob_acc) = online(&dir.path().join("b"), &server, "bob");
    let mut app = HushApp::new(alice.clone());
    app.open_page("chat:bob@localhost");
    let mut h = Harness::new_ui(|ui| app.ui(ui));
    h.run_ok();
    assert!(has(&h, "Padlock: Not private"));

    h.get_by_label_contains("Padlock:").click();
    h.run_ok();
    h.get_by_label("Start private conversation").click();
    until(&mut h, &alice, "private", |h| {
        has(h, "Padlock: Private, but your buddy is not verified")
    });
    assert!(
        has(&h, "Private conversation with bob@localhost started"),
        "a system line"
    );

    // A wrong fingerprint stays red and cannot be accepted; the right one goes green.
    h.get_by_label("Authenticate buddy").click();
    h.run_ok();
    let field = "Fingerprint they read to you";
    h.get_by_label(field).click();
    h.run_ok();
    h.get_by_label(field)
        .type_text("01234567 89ABCDEF 01234567 89ABCDEF 01234567");
    h.run_ok();
    assert!(has(&h, "Fingerprints do not match"));
    h.get_by_label("Mark as verified").click();
    h.run_ok();
    assert!(
        has(&h, "Padlock: Private, but"),
        "a wrong fingerprint verifies nothing"
    );

    let theirs = bob
        .snapshot()
        .otr_keys
        .iter()
        .find(|k| k.account == bob_acc)
        .map(|k| k.fingerprint.clone())
        .expect("bob's key");
    h.get_by_label("Authenticate buddy").click(); // reopens the dialog, empty
    h.run_ok();
    h.get_by_label(field).click();
    h.run_ok();
    h.get_by_label(field).type_text(&theirs.to_lowercase());
    h.run_ok();
    assert!(has(&h, "Fingerprints match"));
    h.get_by_label("Mark as verified").click();
    until(&mut h, &alice, "verified", |h| {
        has(h, "Padlock: Private and verified")
    });

    // A question answered wrong: the failure is shown.
    h.get_by_label("Ask a question").click();
    h.run_ok();
    for (label, text) in [("Question", "Where did we meet?"), ("Answer", "harbour")] {
        h.get_by_label(label).click();
        h.run_ok();
        h.get_by_label(label).type_text(text);
        h.run_ok();
    }
    h.get_by_label("Authenticate").click();
    let mut brx = bob.events();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        h.run_ok();
        match bob.next_event(&mut brx, Duration::from_millis(100)) {
            Some(Event::Smp {
                progress: SmpView::Asked(q),
                ..
            }) => {
                assert_eq!(q, "Where did we meet?");
                break;
            }
            _ => assert!(Instant::now() < deadline, "bob was never asked"),
        }
    }
    bob.execute_blocking(Command::OtrRespond {
        account: bob_acc,
        peer: "alice@localhost".into(),
        secret: Secret::from("harbor"),
    })
    .expect("respond");
    until(&mut h, &alice, "failure shown", |h| {
        has(h, "Authentication failed")
    });

    // Messages go out encrypted and come back decrypted.
    h.get_by_label("Message").click();
    h.run_ok();
    h.get_by_label("Message").type_text("hello bob");
    h.get_by_label("Send").click();
    let mut brx = bob.events();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        h.run_ok();
        if let Some(Event::ChatLine { line, .. }) =
            bob.next_event(&mut brx, Duration::from_millis(100))
            && line.body == "hello bob"
        {
            assert!(line.encrypted);
            break;
        }
        assert!(Instant::now() < deadline, "bob never got it");
    }
    assert_eq!(
        alice
            .snapshot()
            .chats
            .iter()
            .find(|c| c.peer == "bob@localhost")
            .map(|c| c.security),
        Some(ChatSecurity::PrivateUnverified)
    );
}

per_server_blocking!(contact_requests_and_forms, contact_requests_and_forms_on);
fn contact_requests_and_forms_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, _) = online(&dir.path().join("a"), &server, "alice");
    let (bob, bob_acc) = online(&dir.path().join("b"), &server, "bob");
    let mut app = HushApp::new(alice.clone());
    app.open_page("contacts");
    let mut h = Harness::new_ui(|ui| app.ui(ui));
    h.run_ok();

    // The add-contact form refuses a bad address, then sends the request.
    h.get_by_label("Add contact").click();
    h.run_ok();
    h.get_by_label("Contact address").click();
    h.run_ok();
    h.get_by_label("Contact address")
        .type_text("not-an-address");
    h.get_by_label("Send request").click();
    h.run_ok();
    assert!(has(&h, "The address is user@domain"));

    // Bob asks alice: the request shows with its three answers; authorize it.
    bob.execute_blocking(Command::AddContact {
        account: bob_acc,
        address: "alice@localhost".into(),
        alias: None,
        group: None,
    })
    .expect("bob adds alice");
    until(&mut h, &alice, "the request", |h| {
        has(h, "Authorize bob@localhost")
    });
    assert!(has(&h, "Deny bob@localhost") && has(&h, "Ignore bob@localhost"));
    h.get_by_label("Authorize bob@localhost").click();
    until(&mut h, &alice, "the request answered", |h| {
        !has(h, "Authorize bob@localhost")
    });
    assert!(alice.snapshot().requests.is_empty());

    // The account form explains what is missing.
    let mut app2 = HushApp::new(alice.clone());
    app2.open_page("accounts");
    let mut h2 = Harness::new_ui(|ui| app2.ui(ui));
    h2.run_ok();
    h2.get_by_label("Add a calling account (SIP)").click();
    h2.run_ok();
    h2.get_by_label("Address").click();
    h2.run_ok();
    h2.get_by_label("Address").type_text("carol@example.org");
    h2.get_by_label("Save account").click();
    h2.run_ok();
    assert!(has(&h2, "Enter the password"));
    let _ = h;
}

per_server_blocking!(
    account_password_change_and_the_add_form_fields,
    account_password_change_and_the_add_form_fields_on
);
fn account_password_change_and_the_add_form_fields_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, acc) = online(&dir.path().join("a"), &server, "alice");
    let mut app = HushApp::new(alice.clone());
    app.open_page("accounts");
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    h.get_by_label("Change password of alice@localhost").click();
    h.run_ok();
    let type_into = |h: &mut Harness<'_>, label: &str, text: &str| {
        h.get_by_label(label).click();
        h.run_ok();
        h.get_by_label(label).type_text(text);
        h.run_ok();
    };
    type_into(&mut h, "New password", "new-secret-1");
    type_into(&mut h, "Repeat the new password", "new-secret-2");
    h.get_by_label("Change password").click();
    h.run_ok();
    assert!(has(&h, "The two new passwords differ"));
    h.get_by_label("Repeat the new password").click();
    h.run_ok();
    h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
    h.get_by_label("Repeat the new password")
        .type_text("new-secret-1");
    h.run_ok();
    h.get_by_label("Change password").click();
    until(&mut h, &alice, "the server's answer", |h| {
        has(h, "Password changed on the server") || has(h, "was not changed")
    });
    assert!(has(&h, "Password changed on the server"));

    // The server now takes only the new password (and the profile saved it).
    let check = |password: &str| -> AccountStatus {
        let d = tempfile::tempdir().expect("tempdir");
        let p = Phone::start(Profile::open(d.path()).expect("profile")).expect("phone");
        let mut rx = p.events();
        let Ok(Reply::Account(a)) = p.execute_blocking(Command::AddAccount(NewAccount {
            address: "alice@localhost".into(),
            display_name: None,
            password: Some(Secret::new(password.to_owned())),
            remember_password: true,
            settings: AccountSettings::Xmpp(xmpp(&server)),
        })) else {
            panic!("add")
        };
        p.execute_blocking(Command::Connect {
            account: a.id,
            password: None,
        })
        .expect("connect");
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(e) =
            p.next_event(&mut rx, deadline.saturating_duration_since(Instant::now()))
        {
            if let Event::AccountStatus { status, .. } = e
                && matches!(status, AccountStatus::Online | AccountStatus::Error(_))
            {
                return status;
            }
        }
        panic!("no answer for {password}")
    };
    assert_eq!(check("new-secret-1"), AccountStatus::Online);
    assert!(matches!(check("alice-ui-pw"), AccountStatus::Error(_)));
    let _ = acc;

    // The add forms take a self-hosted server's fingerprint and a Tor proxy, and say
    // what is wrong with them.
    h.get_by_label("Add a chat account (XMPP)").click();
    h.run_ok();
    type_into(&mut h, "Address", "sam@example.org");
    type_into(&mut h, "Password", "pw");
    type_into(&mut h, "Trust certificate (SHA-256, optional)", "AB:CD");
    h.get_by_label("Save account").click();
    h.run_ok();
    assert!(has(&h, "64 hex digits"));
    h.get_by_label("Trust certificate (SHA-256, optional)")
        .click();
    h.run_ok();
    h.key_press_modifiers(eframe::egui::Modifiers::COMMAND, eframe::egui::Key::A);
    h.get_by_label("Trust certificate (SHA-256, optional)")
        .type_text(&"ab".repeat(32));
    h.run_ok();
    type_into(&mut h, "SOCKS5 proxy (optional)", "127.0.0.1:9050");
    h.get_by_label("Save account").click();
    until(&mut h, &alice, "the new account", |_| {
        alice
            .snapshot()
            .accounts
            .iter()
            .any(|a| a.config.address == "sam@example.org")
    });
    let sam = alice
        .snapshot()
        .accounts
        .iter()
        .find(|a| a.config.address == "sam@example.org")
        .cloned()
        .expect("sam");
    let AccountSettings::Xmpp(x) = sam.config.settings else {
        panic!("xmpp")
    };
    assert_eq!(x.socks5_proxy.as_deref(), Some("127.0.0.1:9050"));
    assert_eq!(
        x.pinned_cert_sha256.as_deref(),
        Some(vec!["AB"; 32].join(":").as_str())
    );
}

per_server_blocking!(
    join_a_room_see_occupants_and_talk,
    join_a_room_see_occupants_and_talk_on
);
fn join_a_room_see_occupants_and_talk_on(kind: ServerKind) {
    let server = XmppServer::start(kind).expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice, _) = online(&dir.path().join("a"), &server, "alice");
    let (bob, bob_acc) = online(&dir.path().join("b"), &server, "bob");
    let mut app = HushApp::new(alice.clone());
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    h.get_by_label("Join a room").click();
    h.run_ok();
    for (label, text) in [("Room", "team@conference.localhost"), ("Nickname", "Alice")] {
        h.get_by_label(label).click();
        h.run_ok();
        h.get_by_label(label).type_text(text);
        h.run_ok();
    }
    h.get_by_label("Join").click();
    until(&mut h, &alice, "the room page", |h| {
        has(h, "In the room: Alice")
    });
    assert!(has(&h, "Rooms are not end-to-end encrypted"));

    bob.execute_blocking(Command::JoinRoom {
        account: bob_acc,
        room: "team@conference.localhost".into(),
        nick: "Bob".into(),
        password: None,
    })
    .expect("bob joins");
    until(&mut h, &alice, "bob among the occupants", |h| {
        has(h, "In the room: Alice, Bob")
    });
    bob.execute_blocking(Command::SendRoom {
        account: bob_acc,
        room: "team@conference.localhost".into(),
        body: "hello from bob".into(),
    })
    .expect("bob speaks");
    until(&mut h, &alice, "bob's message", |h| {
        has(h, "hello from bob")
    });

    // Alice answers from the window; bob's core receives it.
    let mut bob_events = bob.events();
    h.get_by_label("Room message").click();
    h.run_ok();
    h.get_by_label("Room message").type_text("hi bob");
    h.run_ok();
    h.get_by_label("Send").click();
    h.run_ok();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match bob.next_event(&mut bob_events, left) {
            Some(Event::RoomLine { line, .. }) if line.body == "hi bob" => {
                assert_eq!(line.sender, "Alice");
                break;
            }
            Some(_) => {}
            None => panic!("bob never got alice's room message"),
        }
    }

    // Bob makes a room with a password; alice's wrong password is refused in words.
    bob.execute_blocking(Command::JoinRoom {
        account: bob_acc,
        room: "locked@conference.localhost".into(),
        nick: "Bob".into(),
        password: Some(Secret::new("open sesame".into())),
    })
    .expect("bob creates the room");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !bob.snapshot().rooms.iter().any(|r| {
        r.room == "locked@conference.localhost"
            && r.lines
                .iter()
                .any(|l| l.body.contains("requires the password"))
    }) {
        assert!(Instant::now() < deadline, "the room was not protected");
        std::thread::sleep(Duration::from_millis(50));
    }
    h.get_by_label("Join a room").click();
    h.run_ok();
    for (label, text) in [
        ("Room", "locked@conference.localhost"),
        ("Nickname", "Alice"),
        ("Room password", "guess"),
    ] {
        h.get_by_label(label).click();
        h.run_ok();
        h.get_by_label(label).type_text(text);
        h.run_ok();
    }
    h.get_by_label("Join").click();
    until(&mut h, &alice, "the refusal", |h| {
        has(h, "wrong room password")
    });
}

/// The accounts page says why a login failed in the failure's own words: an account
/// ejabberd's rules refuse a session (its password is right) is a policy refusal there,
/// not "wrong username or password".
#[test]
fn a_login_refused_by_policy_is_shown_in_its_own_words() {
    let server = XmppServer::start(ServerKind::Ejabberd).expect("ejabberd starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Arc::new(Phone::start(Profile::open(dir.path()).expect("profile")).expect("phone"));
    let Ok(Reply::Account(a)) = phone.execute_blocking(Command::RegisterXmpp(NewAccount {
        address: "barred@localhost".into(),
        display_name: None,
        password: Some(Secret::new("barred-ui-pw".into())),
        remember_password: true,
        settings: AccountSettings::Xmpp(xmpp(&server)),
    })) else {
        panic!("register barred")
    };
    phone
        .execute_blocking(Command::Connect {
            account: a.id,
            password: None,
        })
        .expect("connect");
    let mut app = HushApp::new(phone.clone());
    app.open_page("accounts");
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    until(&mut h, &phone, "the policy refusal", |h| {
        has(h, "refused the login by its policy")
    });
    assert!(!has(&h, "wrong username"));
}

/// On a machine without a sound card (as here), the echo test's card does not vanish:
/// it keeps why it ended, in full, shows no live security state, and offers the test
/// tone (then, with no speaker either, the tone without sound), which gives a secure call.
#[test]
fn echo_test_without_a_sound_card_says_so_and_offers_the_tone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Arc::new(Phone::start(Profile::open(dir.path()).expect("profile")).expect("phone"));
    // The default microphone: this machine has none.
    let mut app = HushApp::new(phone.clone());
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    h.run_ok();
    h.get_by_label("Try a secure echo test").click();
    until(&mut h, &phone, "the reason the echo test ended", |h| {
        has(h, "no usable audio input")
    });
    assert!(
        !has(&h, "Negotiating encryption"),
        "an ended call shows no live state"
    );
    assert!(
        has(&h, "no microphone Hushphone can use"),
        "{:?}",
        phone.snapshot().ended_calls
    );
    // Still there when nothing else happens.
    for _ in 0..20 {
        h.run_ok();
    }
    assert!(has(&h, "no usable audio input"));
    assert!(!has(&h, "No calls."));
    h.get_by_label("Try the echo test with a test tone").click();
    // No speaker either: that is said the same way, and the tone without sound still
    // shows the call being secured.
    until(&mut h, &phone, "the speaker's absence", |h| {
        has(h, "no speaker Hushphone can use")
    });
    h.get_by_label("Try the echo test with a test tone and no sound")
        .click();
    until(&mut h, &phone, "a secure echo call with the tone", |h| {
        has(h, "Security code")
    });
}

#[test]
fn settings_offer_the_cameras_found_or_say_video_sends_the_test_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = Arc::new(Phone::start(Profile::open(dir.path()).expect("profile")).expect("phone"));
    let mut app = HushApp::new(phone.clone());
    app.open_page("settings");
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    until(&mut h, &phone, "the camera list", |h| {
        !has(h, "Looking for cameras")
    });
    let pattern = h.get_by_label("Test pattern (moving colour bars), no camera");
    match hush_media::camera::list_cameras().first() {
        // This machine has none: said, and the pattern is what calls send.
        None => {
            assert!(has(
                &h,
                "No camera found: video calls send the test pattern."
            ));
            assert_eq!(pattern.accesskit_node().toggled(), Some(Toggled::True));
        }
        // The first camera is chosen, over the pattern.
        Some(c) => {
            let label = format!("{} ({})", c.name, c.path.display());
            let first = h.get_by_label(&label);
            assert_eq!(first.accesskit_node().toggled(), Some(Toggled::True));
            assert_eq!(pattern.accesskit_node().toggled(), Some(Toggled::False));
        }
    }
    assert!(has(&h, "Look for cameras again"));
}
