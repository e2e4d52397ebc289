//! The window against a real core: unlocking a protected profile, with a wrong password
//! first (the error is shown and the profile stays locked), then the right one.

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use hush_core::model::{AccountSettings, SipSettings};
use hush_core::{NewAccount, Phone, Profile, Secret};
use hush_ui::HushApp;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs the window until `done` holds for it (bounded): between frames it waits for the
/// core's next snapshot, or a quarter second for an answer that changes none (an error).
fn run_until(
    harness: &mut Harness<'_>,
    phone: &Phone,
    what: &str,
    done: impl Fn(&Harness<'_>) -> bool,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut rx = phone.watch();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        harness.run();
        if done(harness) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what} within 10 s");
        let wait = left.min(Duration::from_millis(250));
        rt.block_on(async {
            let _ = tokio::time::timeout(wait, rx.changed()).await;
        });
    }
}

#[test]
fn unlock_shows_errors_then_accounts() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut p = Profile::open(dir.path()).expect("profile");
        p.add_account(NewAccount {
            address: "alice@127.0.0.1".into(),
            display_name: None,
            password: Some(Secret::from("alicepw")),
            remember_password: true,
            settings: AccountSettings::Sip(SipSettings::default()),
        })
        .expect("account");
        p.set_master_password(&Secret::from("the master password"))
            .expect("set");
    }
    let phone = Arc::new(Phone::start(Profile::open(dir.path()).expect("reopen")).expect("phone"));
    let mut app = HushApp::new(phone.clone());
    let mut harness = Harness::new_ui(|ui| app.ui(ui));
    harness.run();
    harness.get_by_label_contains("Unlock your profile");
    assert!(
        harness.query_by_label("alice@127.0.0.1").is_none(),
        "accounts hidden while locked"
    );

    harness.get_by_label("Master password").click();
    harness.run();
    harness
        .get_by_label("Master password")
        .type_text("not the password");
    harness.get_by_label("Unlock").click();
    run_until(&mut harness, &phone, "the error shown", |h| {
        h.query_by_label_contains("wrong master password").is_some()
    });
    assert!(phone.snapshot().locked);

    harness.get_by_label("Master password").click();
    harness.run();
    harness
        .get_by_label("Master password")
        .type_text("the master password");
    harness.get_by_label("Unlock").click();
    run_until(&mut harness, &phone, "the profile unlocked", |_| {
        !phone.snapshot().locked
    });
    harness.get_by_label("Accounts").click();
    harness.run();
    harness.get_by_label("alice@127.0.0.1");
    assert!(
        harness
            .query_by_label_contains("wrong master password")
            .is_none(),
        "old error cleared"
    );
}
