//! Frame time of the window with a large roster and a long conversation: 5,000 contacts
//! in 20 groups, and a chat of 10,000 lines. The lists are virtualized, so a frame
//! should cost about the same as with ten entries. CPU side only (layout and
//! tessellation through egui_kittest, no GPU), mean of 300 frames after 20 warm-up ones.
//!
//! `cargo run --release --manifest-path benches/Cargo.toml --bin ui_frame`

use egui_kittest::Harness;
use hush_core::model::{AccountConfig, AccountSettings, XmppSettings};
use hush_core::snapshot::{
    AccountStatus, AccountView, ChatLine, ChatView, ContactView, Presence, Subscription,
};
use hush_core::{AccountId, ChatSecurity, Phone, Profile, Snapshot};
use hush_ui::HushApp;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FRAMES: u32 = 300;

fn snapshot(contacts: usize, lines: usize) -> Snapshot {
    let account = AccountId(1);
    Snapshot {
        accounts: vec![AccountView {
            config: AccountConfig {
                id: account,
                address: "me@example.org".into(),
                display_name: None,
                remember_password: true,
                settings: AccountSettings::Xmpp(XmppSettings::default()),
            },
            status: AccountStatus::Online,
        }],
        contacts: (0..contacts)
            .map(|i| ContactView {
                account,
                address: format!("contact{i}@example.org"),
                alias: Some(format!("Contact {i}")),
                group: Some(format!("Group {}", i % 20)),
                presence: if i % 3 == 0 {
                    Presence::Available
                } else {
                    Presence::Offline
                },
                subscription: Subscription::Authorized,
            })
            .collect(),
        chats: vec![ChatView {
            account,
            peer: "friend@example.org".into(),
            security: ChatSecurity::PrivateVerified,
            fingerprint_changed: false,
            peer_fingerprint: None,
            smp: None,
            policy: Default::default(),
            held: 0,
            lines: Arc::new(
                (0..lines)
                    .map(|i| ChatLine {
                        id: i.to_string(),
                        sender: "friend@example.org".into(),
                        from_me: i % 2 == 0,
                        body: format!("message number {i}, long enough to look like a real one"),
                        at_unix_ms: 0,
                        delivered: true,
                        delayed: false,
                        encrypted: true,
                        held: false,
                        notice: false,
                    })
                    .collect(),
            ),
        }],
        ..Default::default()
    }
}

fn measure(phone: &Arc<Phone>, snap: Snapshot, page: &str) -> Duration {
    let mut app = HushApp::new(phone.clone()).with_fixed_snapshot(snap);
    app.open_page(page);
    let mut h = Harness::builder()
        .with_size((1280.0, 800.0))
        .build_ui(|ui| app.ui(ui));
    for _ in 0..20 {
        h.step();
    }
    let start = Instant::now();
    for _ in 0..FRAMES {
        h.step();
    }
    start.elapsed() / FRAMES
}

fn main() {
    let dir = std::env::temp_dir().join(format!("hush-ui-bench-{}", std::process::id()));
    let phone = Arc::new(Phone::start(Profile::open(&dir).expect("profile")).expect("phone"));
    println!("| view | small | large | ");
    println!("|---|---|---|");
    for (page, label) in [
        ("contacts", "contacts (10 vs 5,000)"),
        ("chat:friend@example.org", "chat (10 vs 10,000 lines)"),
    ] {
        let small = measure(&phone, snapshot(10, 10), page);
        let large = measure(&phone, snapshot(5_000, 10_000), page);
        println!(
            "| {label} | {:.2} ms | {:.2} ms |",
            small.as_secs_f64() * 1e3,
            large.as_secs_f64() * 1e3
        );
    }
    drop(phone);
    let _ = std::fs::remove_dir_all(&dir);
}
