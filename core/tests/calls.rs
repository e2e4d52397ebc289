//! Calls driven through the phone core, as the CLI and the window drive them: the
//! built-in echo peer, two phones registered at a real Kamailio, and a hand-written SIP
//! peer that sends what a hostile one would.

use hush_core::command::{MediaChoice, SinkSpec, SourceSpec, VideoChoice, VideoSourceSpec};
use hush_core::model::{AccountSettings, EncryptionPolicy, SipSettings, Transport};
use hush_core::snapshot::{AccountStatus, CallId, CallState, StreamKind};
use hush_core::{CallSecurity, Command, Event, NewAccount, Phone, Profile, Reply, Secret};
use hush_harness::{Kamailio, SipPeer, sip_header, sip_status};
use hush_media::analysis::{dominant_frequency, rms};
use hush_media::audio::read_recording;
use hush_media::video::{TestPattern, VideoSource, Y4mReader};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

fn phone(dir: &std::path::Path) -> Phone {
    Phone::start(Profile::open(dir).expect("profile")).expect("phone")
}

/// Waits (bounded) for an event matching `f` and returns what it extracts.
fn wait<T>(
    rx: &mut broadcast::Receiver<Event>,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("no {what} within 15 s");
        }
        match rx.blocking_recv_timeout(left) {
            Some(ev) => {
                if let Some(v) = f(&ev) {
                    return v;
                }
            }
            None => panic!("no {what} within 15 s"),
        }
    }
}

trait RecvTimeout {
    fn blocking_recv_timeout(&mut self, d: Duration) -> Option<Event>;
}

impl RecvTimeout for broadcast::Receiver<Event> {
    fn blocking_recv_timeout(&mut self, d: Duration) -> Option<Event> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .ok()?;
        rt.block_on(async {
            loop {
                match tokio::time::timeout(d, self.recv()).await {
                    Ok(Ok(ev)) => return Some(ev),
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                    _ => return None,
                }
            }
        })
    }
}

fn secure_sas(call: CallId) -> impl FnMut(&Event) -> Option<String> {
    move |ev| match ev {
        Event::CallSecurity {
            call: c,
            security: CallSecurity::Secure { sas, .. },
        } if *c == call => Some(sas.clone()),
        _ => None,
    }
}

#[test]
fn echo_peer_call_is_secure_and_echoes_the_tone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(&dir.path().join("p"));
    let mut events = phone.events();
    let echo = MediaChoice {
        source: SourceSpec::Echo,
        sink: SinkSpec::Null,
        video: None,
    };
    let Reply::Listening(addr) = phone
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: Some(echo),
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!("expected Listening")
    };
    let recording = dir.path().join("echo.wav");
    let audio = MediaChoice {
        source: SourceSpec::Tone(440.0),
        sink: SinkSpec::Wav(recording.clone()),
        video: None,
    };
    let Reply::Call(call) = phone
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("echo@{addr}"),
            audio,
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    let sas = wait(&mut events, "secure caller", secure_sas(call));
    let snap = phone.snapshot();
    let echo_call = snap
        .calls
        .iter()
        .find(|c| c.id != call)
        .expect("the echo side's call")
        .id;
    let echo_sas = match &snap
        .calls
        .iter()
        .find(|c| c.id == echo_call)
        .expect("echo call")
        .security
    {
        CallSecurity::Secure { sas, .. } => sas.clone(),
        _ => wait(&mut events, "secure echo side", secure_sas(echo_call)),
    };
    assert_eq!(sas, echo_sas, "both ends show the same SAS");
    let algorithms = phone
        .snapshot()
        .calls
        .iter()
        .find(|c| c.id == call)
        .and_then(|c| c.algorithms.clone());
    assert!(
        algorithms.is_some_and(|a| a.starts_with("X255/")),
        "X25519 preferred"
    );
    wait(&mut events, "two seconds of echo", |ev| match ev {
        Event::CallStats { call: c, stats, .. } if *c == call && stats.packets_received >= 100 => {
            Some(())
        }
        _ => None,
    });
    // ZRTP remembers "verified" only when both ends confirmed the SAS (RFC 6189 V flag).
    phone
        .execute_blocking(Command::SetSasVerified {
            call,
            verified: true,
        })
        .expect("verify");
    phone
        .execute_blocking(Command::SetSasVerified {
            call: echo_call,
            verified: true,
        })
        .expect("verify");
    assert!(matches!(
        phone
            .snapshot()
            .calls
            .iter()
            .find(|c| c.id == call)
            .map(|c| c.security.clone()),
        Some(CallSecurity::Secure { verified: true, .. })
    ));
    phone
        .execute_blocking(Command::Hangup { call })
        .expect("hangup");
    wait(&mut events, "caller ended", |ev| match ev {
        Event::CallState {
            call: c,
            state: CallState::Ended(_),
        } if *c == call => Some(()),
        _ => None,
    });
    let (samples, rate) = read_recording(&recording).expect("recording");
    let tail = &samples[samples.len().saturating_sub(rate as usize)..];
    assert_eq!(dominant_frequency(tail, rate), 440.0, "the tone comes back");
    assert!(rms(tail) > 2000.0);
    drop(phone);

    // The verified flag was stored in the profile's ZID cache: the next call shows it.
    let phone2 = self::phone(&dir.path().join("p"));
    let mut events = phone2.events();
    let Reply::Listening(addr) = phone2
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer: Some(MediaChoice {
                source: SourceSpec::Echo,
                sink: SinkSpec::Null,
                video: None,
            }),
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    else {
        panic!()
    };
    let Reply::Call(call) = phone2
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("echo@{addr}"),
            audio: MediaChoice::default(),
            policy: None,
        })
        .expect("call")
    else {
        panic!()
    };
    let verified = wait(&mut events, "secure again", |ev| match ev {
        Event::CallSecurity {
            call: c,
            security: CallSecurity::Secure { verified, .. },
        } if *c == call => Some(*verified),
        _ => None,
    });
    assert!(verified, "SAS verification persisted across calls");
}

fn sip_account(
    phone: &Phone,
    user: &str,
    password: &str,
    kamailio: &Kamailio,
    transport: Transport,
) -> hush_core::AccountId {
    account_with_realm(phone, user, password, kamailio, transport, None)
}

/// A SIP account at `kamailio`; `realm` is the one configured for its password.
fn account_with_realm(
    phone: &Phone,
    user: &str,
    password: &str,
    kamailio: &Kamailio,
    transport: Transport,
    realm: Option<&str>,
) -> hush_core::AccountId {
    let (port, tls_ca_file) = match transport {
        Transport::Tls => (
            kamailio.tls_port().expect("kamailio with TLS"),
            Some(kamailio.dir().join("certs/sip.crt").display().to_string()),
        ),
        _ => (kamailio.port(), None),
    };
    let new = NewAccount {
        address: format!("{user}@127.0.0.1"),
        display_name: None,
        password: Some(Secret::from(password)),
        remember_password: true,
        settings: AccountSettings::Sip(SipSettings {
            registrar: Some(format!("sip:127.0.0.1:{port}")),
            transport,
            tls_ca_file,
            realm: realm.map(str::to_owned),
            ..SipSettings::default()
        }),
    };
    match phone
        .execute_blocking(Command::AddAccount(new))
        .expect("add")
    {
        Reply::Account(a) => a.id,
        _ => panic!("expected account"),
    }
}

#[test]
fn two_phones_registered_at_kamailio_call_each_other_securely() {
    let k = Kamailio::start().expect("kamailio");
    call_through_kamailio(&k, Transport::Udp, Transport::Udp, false);
}

#[test]
fn two_phones_registered_at_kamailio_make_a_video_call_keyed_both_ways() {
    let k = Kamailio::start().expect("kamailio");
    call_through_kamailio(&k, Transport::Udp, Transport::Udp, true);
}

#[test]
fn a_tcp_phone_calls_a_tls_phone_through_kamailio() {
    let k = Kamailio::start_with_tls().expect("kamailio");
    call_through_kamailio(&k, Transport::Tcp, Transport::Tls, false);
}

/// The moving test pattern as camera, and what the other side sends recorded here.
fn camera(record: &std::path::Path) -> Option<VideoChoice> {
    Some(VideoChoice {
        source: VideoSourceSpec::Pattern,
        record: Some(record.to_path_buf()),
    })
}

/// A recording of the test pattern: every picture shows the bars, and the marker moved.
fn assert_pattern_recorded(path: &std::path::Path, who: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{who}: {e}"));
    let mut y4m = Y4mReader::new(file, false).expect("y4m");
    let (mut frames, mut markers) = (0, std::collections::BTreeSet::new());
    while let Some(p) = y4m.next_frame().expect("frame") {
        assert!(TestPattern::shows_bars(&p, 24), "{who}: picture {frames}");
        markers.insert(TestPattern::find_marker(&p));
        frames += 1;
    }
    assert!(
        frames >= 15 && markers.len() >= 5,
        "{who}: {frames} pictures"
    );
}

/// Alice calls bob through Kamailio, each registered over the given transport: the
/// call becomes secure with the same SAS and bob hears alice's tone; with video, each
/// records the other's test pattern, every stream keyed.
fn call_through_kamailio(k: &Kamailio, a: Transport, b: Transport, video: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = phone(&dir.path().join("alice"));
    let bob = phone(&dir.path().join("bob"));
    let (mut a_ev, mut b_ev) = (alice.events(), bob.events());
    let a_acc = sip_account(&alice, "alice", "alicepw", k, a);
    let b_acc = sip_account(&bob, "bob", "bobpw", k, b);
    alice
        .execute_blocking(Command::Connect {
            account: a_acc,
            password: None,
        })
        .expect("connect alice");
    bob.execute_blocking(Command::Connect {
        account: b_acc,
        password: None,
    })
    .expect("connect bob");
    for (ev, acc) in [(&mut a_ev, a_acc), (&mut b_ev, b_acc)] {
        wait(ev, "registered", |e| match e {
            Event::AccountStatus {
                account,
                status: AccountStatus::Online,
            } if *account == acc => Some(()),
            Event::AccountStatus {
                status: AccountStatus::Error(e),
                ..
            } => panic!("registration failed: {e}"),
            _ => None,
        });
    }
    let heard_by_bob = dir.path().join("bob.wav");
    let (seen_by_alice, seen_by_bob) = (dir.path().join("alice.y4m"), dir.path().join("bob.y4m"));
    let Reply::Call(a_call) = alice
        .execute_blocking(Command::PlaceCall {
            account: Some(a_acc),
            target: format!("bob@127.0.0.1:{}", k.port()),
            audio: MediaChoice {
                source: SourceSpec::Tone(440.0),
                sink: SinkSpec::Null,
                video: if video { camera(&seen_by_alice) } else { None },
            },
            policy: None,
        })
        .expect("call")
    else {
        panic!()
    };
    let b_call = wait(&mut b_ev, "incoming call", |e| match e {
        Event::CallIncoming { call, from } => {
            assert!(from.contains("alice"), "{from}");
            Some(*call)
        }
        _ => None,
    });
    bob.execute_blocking(Command::Answer {
        call: b_call,
        audio: MediaChoice {
            source: SourceSpec::Silence,
            sink: SinkSpec::Wav(heard_by_bob.clone()),
            video: if video { camera(&seen_by_bob) } else { None },
        },
    })
    .expect("answer");
    let sas_a = wait(&mut a_ev, "alice secure", secure_sas(a_call));
    let sas_b = wait(&mut b_ev, "bob secure", secure_sas(b_call));
    assert_eq!(sas_a, sas_b);
    if video {
        // Pictures decoded on both sides, every stream keyed.
        for (ev, call) in [(&mut a_ev, a_call), (&mut b_ev, b_call)] {
            wait(ev, "pictures", |e| match e {
                Event::CallStats {
                    call: c,
                    kind: StreamKind::Video,
                    stats,
                } if *c == call && stats.video.is_some_and(|v| v.frames_decoded >= 30) => Some(()),
                _ => None,
            });
        }
        for (p, call) in [(&alice, a_call), (&bob, b_call)] {
            let snap = p.snapshot();
            let view = snap.calls.iter().find(|c| c.id == call).expect("call");
            assert_eq!(view.streams.len(), 2);
            assert!(
                view.streams
                    .iter()
                    .all(|s| matches!(s.security, CallSecurity::Secure { .. })),
                "{:?}",
                view.streams
            );
        }
    }
    wait(&mut b_ev, "audio at bob", |e| match e {
        Event::CallStats {
            call,
            kind: StreamKind::Audio,
            stats,
        } if *call == b_call && stats.packets_received >= 100 => Some(()),
        _ => None,
    });
    bob.execute_blocking(Command::Hangup { call: b_call })
        .expect("hangup");
    wait(&mut a_ev, "alice sees the end", |e| match e {
        Event::CallState {
            call,
            state: CallState::Ended(r),
        } if *call == a_call => Some(r.clone()),
        _ => None,
    });
    wait(&mut b_ev, "bob's call ended", |e| match e {
        Event::CallState {
            call,
            state: CallState::Ended(_),
        } if *call == b_call => Some(()),
        _ => None,
    });
    let (samples, rate) = read_recording(&heard_by_bob).expect("recording");
    let tail = &samples[samples.len().saturating_sub(rate as usize)..];
    assert_eq!(
        dominant_frequency(tail, rate),
        440.0,
        "bob hears alice's tone"
    );
    let level = rms(tail);
    assert!((3000.0..9000.0).contains(&level), "level {level}");
    if video {
        assert_pattern_recorded(&seen_by_alice, "alice");
        assert_pattern_recorded(&seen_by_bob, "bob");
    }
}

#[test]
fn a_registrar_whose_name_does_not_resolve_is_an_account_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = phone(dir.path());
    let mut events = p.events();
    let Reply::Account(a) = p
        .execute_blocking(Command::AddAccount(NewAccount {
            address: "alice@no-such-host.invalid".into(),
            display_name: None,
            password: Some(Secret::from("pw")),
            remember_password: true,
            settings: AccountSettings::Sip(SipSettings::default()),
        }))
        .expect("add")
    else {
        panic!("expected account")
    };
    let start = Instant::now();
    // The lookup runs by itself: the command is accepted, the account says why later.
    p.execute_blocking(Command::Connect {
        account: a.id,
        password: None,
    })
    .expect("connect is accepted");
    let status = wait(&mut events, "the account's error", |e| match e {
        Event::AccountStatus {
            account,
            status: AccountStatus::Error(why),
        } if *account == a.id => Some(why.clone()),
        _ => None,
    });
    assert!(
        status.contains("cannot find the server no-such-host.invalid"),
        "{status}"
    );
    // Bounded even with a dead name service: 5 s for the lookup, then the error.
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(matches!(
        p.snapshot().accounts[0].status,
        AccountStatus::Error(_)
    ));
}

fn listen(phone: &Phone, auto_answer: Option<MediaChoice>) -> std::net::SocketAddr {
    match phone
        .execute_blocking(Command::Listen {
            addr: "127.0.0.1:0".parse().expect("addr"),
            auto_answer,
            policy: EncryptionPolicy::Mandatory,
        })
        .expect("listen")
    {
        Reply::Listening(addr) => addr,
        other => panic!("expected Listening, got {other:?}"),
    }
}

/// An offer as linphonec writes it, with `hash` as its `a=zrtp-hash`.
fn offer_with_zrtp_hash(hash: &str) -> String {
    format!(
        "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7080 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=zrtp-hash:{hash}\r\na=sendrecv\r\n"
    )
}

#[test]
fn an_offer_with_a_malformed_zrtp_hash_is_refused_before_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    // An auto-answering line: nothing stands between the offer and a 200 OK.
    let addr = listen(
        &phone,
        Some(MediaChoice {
            source: SourceSpec::Echo,
            sink: SinkSpec::Null,
            video: None,
        }),
    );
    let mut caller = SipPeer::bind("mallory").expect("peer");
    let bad = format!("1.10 {}", "zz".repeat(32));
    let inv = caller
        .invite(
            addr,
            &format!("sip:echo@{addr}"),
            &offer_with_zrtp_hash(&bad),
        )
        .expect("INVITE");
    let answers = caller.responses(&inv, Duration::from_secs(10));
    let codes: Vec<u16> = answers.iter().filter_map(|m| sip_status(m)).collect();
    assert_eq!(codes.last(), Some(&488), "{answers:#?}");
    assert!(!codes.contains(&200), "answered: {answers:#?}");
    assert!(phone.snapshot().calls.is_empty(), "no call is left behind");
}

#[test]
fn a_failed_answer_sends_no_200_and_the_call_can_still_be_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = phone(&dir.path().join("alice"));
    let bob = phone(&dir.path().join("bob"));
    let (mut a_ev, mut b_ev) = (alice.events(), bob.events());
    let addr = listen(&bob, None);
    let Reply::Call(a_call) = alice
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("bob@{addr}"),
            audio: MediaChoice::default(),
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    let b_call = wait(&mut b_ev, "incoming call", |e| match e {
        Event::CallIncoming { call, .. } => Some(*call),
        _ => None,
    });
    // Recording into a folder that does not exist: the media cannot start.
    let nowhere = dir.path().join("no-such-folder").join("call.wav");
    let err = bob
        .execute_blocking(Command::Answer {
            call: b_call,
            audio: MediaChoice {
                source: SourceSpec::Silence,
                sink: SinkSpec::Wav(nowhere.clone()),
                video: None,
            },
        })
        .expect_err("the recording cannot be created");
    assert!(err.to_string().contains("no-such-folder"), "{err}");
    // Nothing was answered: the call still rings and can be picked up properly.
    bob.execute_blocking(Command::Answer {
        call: b_call,
        audio: MediaChoice::default(),
    })
    .expect("answer");
    let sas_a = wait(&mut a_ev, "alice secure", secure_sas(a_call));
    let sas_b = wait(&mut b_ev, "bob secure", secure_sas(b_call));
    assert_eq!(sas_a, sas_b);
    alice
        .execute_blocking(Command::Hangup { call: a_call })
        .expect("hangup");
    wait(&mut b_ev, "bob's call ended", |e| match e {
        Event::CallState {
            call,
            state: CallState::Ended(_),
        } if *call == b_call => Some(()),
        _ => None,
    });
}

#[test]
fn a_callee_asking_for_a_foreign_realm_gets_no_password_and_the_user_is_told() {
    let k = Kamailio::start().expect("kamailio");
    // "bob" is a rogue callee collecting password hashes for its own realm.
    let mut mallory = SipPeer::bind("bob").expect("peer");
    mallory.register(&k, "bobpw").expect("bob registered");
    let rogue = mallory.challenge_invites("evil.example");
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = phone(dir.path());
    let mut events = alice.events();
    let acc = sip_account(&alice, "alice", "alicepw", &k, Transport::Udp);
    alice
        .execute_blocking(Command::Connect {
            account: acc,
            password: None,
        })
        .expect("connect");
    wait(&mut events, "registered", |e| match e {
        Event::AccountStatus {
            status: AccountStatus::Online,
            ..
        } => Some(()),
        Event::AccountStatus {
            status: AccountStatus::Error(e),
            ..
        } => panic!("registration failed: {e}"),
        _ => None,
    });
    let Reply::Call(call) = alice
        .execute_blocking(Command::PlaceCall {
            account: Some(acc),
            target: format!("bob@127.0.0.1:{}", k.port()),
            audio: MediaChoice::default(),
            policy: None,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    let why = wait(&mut events, "the call's end", |e| match e {
        Event::CallState {
            call: c,
            state: CallState::Ended(why),
        } if *c == call => Some(why.clone()),
        _ => None,
    });
    assert!(
        why.contains("asked for your password for realm \"evil.example\"")
            && why.ends_with("it was not sent"),
        "{why}"
    );
    let seen = rogue.finish();
    assert!(seen.iter().any(|m| m.starts_with("INVITE ")), "{seen:#?}");
    for m in &seen {
        assert!(
            sip_header(m, "Authorization").is_none()
                && sip_header(m, "Proxy-Authorization").is_none(),
            "credentials reached the rogue:\n{m}"
        );
    }
}

/// An SDP answer as a plain SIP phone writes it, media at `port`, with `extra` lines.
fn answer_sdp(port: u16, extra: &str) -> String {
    format!(
        "v=0\r\no=peer 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}a=sendrecv\r\n"
    )
}

/// The phone calls the raw peer `bob` directly and bob picks up with `sdp`; bob then
/// answers nothing more (no reply to a BYE).
fn call_picked_up_by(
    phone: &Phone,
    bob: &SipPeer,
    policy: Option<EncryptionPolicy>,
    sdp: &str,
) -> CallId {
    let Reply::Call(call) = phone
        .execute_blocking(Command::PlaceCall {
            account: None,
            target: format!("bob@{}", bob.addr()),
            audio: MediaChoice::default(),
            policy,
        })
        .expect("call")
    else {
        panic!("expected Call")
    };
    let (invite, from) = bob
        .next_request("INVITE", Duration::from_secs(10))
        .expect("the INVITE");
    bob.accept(&invite, from, "bob-1", sdp).expect("200 OK");
    call
}

/// Whether `command` gets its reply within `limit` (the core is not stalled).
fn replies_within(phone: &Phone, command: Command, limit: Duration) -> bool {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = tx.send(phone.execute_blocking(command));
        });
        rx.recv_timeout(limit).is_ok()
    })
}

fn ended(call: CallId) -> impl FnMut(&Event) -> Option<String> {
    move |e| match e {
        Event::CallState {
            call: c,
            state: CallState::Ended(why),
        } if *c == call => Some(why.clone()),
        _ => None,
    }
}

#[test]
fn a_peer_that_never_answers_our_bye_does_not_stall_the_phone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut events = phone.events();
    let bob = SipPeer::bind("bob").expect("peer");
    // Bob picks up with an answer whose zrtp-hash is malformed: the call cannot be keyed
    // and is ended with a BYE, which bob never answers (SIP waits up to 32 s for it).
    let bad = answer_sdp(7078, &format!("a=zrtp-hash:1.10 {}\r\n", "zz".repeat(32)));
    let call = call_picked_up_by(&phone, &bob, None, &bad);
    bob.next_request("BYE", Duration::from_secs(10))
        .expect("the BYE");
    assert!(
        replies_within(&phone, Command::ListVerifiedPeers, Duration::from_secs(1)),
        "the phone took no command while the BYE went unanswered"
    );
    let why = wait(&mut events, "the call's end", ended(call));
    assert!(why.contains("zrtp-hash"), "{why}");
    assert!(phone.snapshot().calls.is_empty(), "the call is still shown");
}

#[test]
fn hanging_up_on_a_peer_that_never_answers_the_bye_ends_the_call_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut events = phone.events();
    let bob = SipPeer::bind("bob").expect("peer");
    let media = std::net::UdpSocket::bind("127.0.0.1:0").expect("media sink");
    let port = media.local_addr().expect("addr").port();
    // No ZRTP at all: best effort lets the call go on in cleartext.
    let call = call_picked_up_by(
        &phone,
        &bob,
        Some(EncryptionPolicy::BestEffort),
        &answer_sdp(port, ""),
    );
    wait(&mut events, "connected", |e| match e {
        Event::CallState {
            call: c,
            state: CallState::Connected,
        } if *c == call => Some(()),
        _ => None,
    });
    assert!(
        replies_within(&phone, Command::Hangup { call }, Duration::from_secs(1)),
        "hanging up waited for the peer's answer to the BYE"
    );
    assert_eq!(wait(&mut events, "the call's end", ended(call)), "hung up");
    bob.next_request("BYE", Duration::from_secs(5))
        .expect("the BYE went out all the same");
    assert!(phone.snapshot().calls.is_empty(), "the call is still shown");
}

#[test]
fn a_realm_set_in_the_account_is_the_only_one_its_password_answers() {
    let k = Kamailio::start().expect("kamailio");
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut events = phone.events();
    let status = |events: &mut broadcast::Receiver<Event>, acc| {
        wait(events, "the account's status", move |e| match e {
            Event::AccountStatus { account, status }
                if *account == acc
                    && matches!(status, AccountStatus::Online | AccountStatus::Error(_)) =>
            {
                Some(status.clone())
            }
            _ => None,
        })
    };
    // Kamailio challenges for realm "127.0.0.1"; this account's password is for
    // another realm, so the registrar's first challenge is not taken on trust.
    let elsewhere = account_with_realm(
        &phone,
        "alice",
        "alicepw",
        &k,
        Transport::Udp,
        Some("elsewhere.example"),
    );
    phone
        .execute_blocking(Command::Connect {
            account: elsewhere,
            password: None,
        })
        .expect("connect");
    match status(&mut events, elsewhere) {
        AccountStatus::Error(why) => assert!(
            why.contains("realm \"127.0.0.1\"")
                && why.contains("\"elsewhere.example\"")
                && why.ends_with("it was not sent"),
            "{why}"
        ),
        other => panic!("the password answered another realm: {other:?}"),
    }
    // Set to the registrar's realm, it registers.
    let own = account_with_realm(
        &phone,
        "bob",
        "bobpw",
        &k,
        Transport::Udp,
        Some("127.0.0.1"),
    );
    phone
        .execute_blocking(Command::Connect {
            account: own,
            password: None,
        })
        .expect("connect");
    assert_eq!(
        status(&mut events, own),
        AccountStatus::Online,
        "{}",
        k.log_tail()
    );
}

#[test]
fn holding_a_call_whose_peer_is_slow_to_answer_the_reinvite_does_not_stall_the_phone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phone = phone(dir.path());
    let mut events = phone.events();
    let bob = SipPeer::bind("bob").expect("peer");
    let media = std::net::UdpSocket::bind("127.0.0.1:0").expect("media sink");
    let port = media.local_addr().expect("addr").port();
    let call = call_picked_up_by(
        &phone,
        &bob,
        Some(EncryptionPolicy::BestEffort),
        &answer_sdp(port, ""),
    );
    wait(&mut events, "connected", |e| match e {
        Event::CallState {
            call: c,
            state: CallState::Connected,
        } if *c == call => Some(()),
        _ => None,
    });
    assert!(
        replies_within(
            &phone,
            Command::Hold { call, on: true },
            Duration::from_secs(1)
        ),
        "hold waited for the peer's answer to the re-INVITE"
    );
    let (reinvite, from) = bob
        .next_request("INVITE", Duration::from_secs(5))
        .expect("the re-INVITE");
    assert!(reinvite.contains("a=sendonly"), "{reinvite}");
    // Bob takes his time; meanwhile the phone takes commands.
    assert!(
        replies_within(&phone, Command::ListVerifiedPeers, Duration::from_secs(1)),
        "the phone took no command while the re-INVITE went unanswered"
    );
    assert!(
        phone
            .snapshot()
            .calls
            .iter()
            .any(|c| c.id == call && c.state == CallState::Connected),
        "on hold before the peer agreed"
    );
    let answer = answer_sdp(port, "").replace("a=sendrecv", "a=recvonly");
    bob.reply(&reinvite, from, "200 OK", None, &[], &answer)
        .expect("200 for the re-INVITE");
    wait(&mut events, "on hold", |e| match e {
        Event::CallState {
            call: c,
            state: CallState::OnHold,
        } if *c == call => Some(()),
        _ => None,
    });
}
