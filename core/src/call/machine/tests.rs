//! The machine's decisions, two machines talking over simulated links (hush-sim) or
//! one machine and a hand-written peer: no sockets, no threads, no clock.

use super::*;
use hush_sim::{Conditions, Endpoint, Pair};

/// What crosses the simulated network between two phones: the SIP messages the
/// machines' actions stand for (the SIP stack's transactions are not simulated: one
/// message per action).
#[derive(Debug, Clone)]
enum Wire {
    Invite(String),
    Ringing,
    Ok(String),
    Reject(Rejection),
    Bye,
    ReInvite(String),
    ReInviteOk(String),
    ReInviteRefused(Refusal),
}

const ALICE: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, 1));
const BOB: IpAddr = IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, 2));

fn hash(d: char) -> String {
    format!("1.10 {}", d.to_string().repeat(64))
}

/// One phone: the machine, and a media layer that starts whatever it is told.
struct Phone {
    core: CallCore,
    addr: IpAddr,
    call: Option<CallId>,
    policy: EncryptionPolicy,
    outbox: VecDeque<Wire>,
    events: Vec<Event>,
    media: Vec<(usize, MediaAction)>,
    sip: Vec<SipAction>,
    /// Every output in the order the machine gave it, with the time.
    log: Vec<(Instant, Output)>,
    /// Answer an incoming call at once.
    auto_answer: bool,
    /// Prepare a video stream too (as a phone with a camera would).
    video: bool,
    /// Our driver cannot start video (a bad camera file).
    video_start_fails: bool,
    /// Our driver prepares no video for a peer's re-INVITE that adds some.
    no_added_video: bool,
    /// Prepared streams the machine gave back.
    released: Vec<PreparedStream>,
}

impl Phone {
    fn new(addr: IpAddr, seed: u64) -> Phone {
        Phone {
            core: CallCore::new(seed),
            addr,
            call: None,
            policy: EncryptionPolicy::Mandatory,
            outbox: VecDeque::new(),
            events: Vec::new(),
            media: Vec::new(),
            sip: Vec::new(),
            log: Vec::new(),
            auto_answer: true,
            video: false,
            video_start_fails: false,
            no_added_video: false,
            released: Vec::new(),
        }
    }

    /// A video stream prepared mid-call (the `n`th), as the driver makes one.
    fn added_video(&self, n: u16) -> PreparedStream {
        PreparedStream {
            kind: MediaKind::Video,
            port: 5000 + 2 * n,
            zrtp_hash: Some(hash(if self.addr == ALICE { 'e' } else { 'f' })),
            rtcp_port: Some(5001 + 2 * n),
            screen: false,
        }
    }

    fn prepared(&self) -> Vec<PreparedStream> {
        let mut p = vec![PreparedStream {
            kind: MediaKind::Audio,
            port: 4000,
            zrtp_hash: Some(hash(if self.addr == ALICE { 'a' } else { 'b' })),
            rtcp_port: None,
            screen: false,
        }];
        if self.video {
            p.push(PreparedStream {
                kind: MediaKind::Video,
                port: 4002,
                zrtp_hash: Some(hash(if self.addr == ALICE { 'c' } else { 'd' })),
                rtcp_port: Some(4003),
                screen: false,
            });
        }
        p
    }

    fn id(&self) -> CallId {
        self.call.expect("a call")
    }

    fn place(&mut self, now: Instant) {
        let id = self.core.allocate();
        self.call = Some(id);
        let streams = self.prepared();
        self.core
            .handle(
                now,
                Input::Place {
                    id,
                    account: None,
                    peer: "bob@10.0.0.2".into(),
                    policy: self.policy,
                    addr: self.addr,
                    session_id: 7,
                    streams,
                },
            )
            .expect("place");
        self.pump(now);
    }

    fn answer(&mut self, now: Instant) -> Result<()> {
        let id = self.id();
        let wanted = self.core.wanted_streams(id);
        let streams = self
            .prepared()
            .into_iter()
            .filter(|p| wanted.contains(&p.kind))
            .collect();
        let r = self.core.handle(now, Input::Answer { id, streams });
        self.pump(now);
        r
    }

    fn input(&mut self, now: Instant, input: Input) -> Result<()> {
        let r = self.core.handle(now, input);
        self.pump(now);
        r
    }

    fn sip_in(&mut self, now: Instant, sip: SipInput) {
        let id = self.id();
        self.input(now, Input::Sip(id, sip)).expect("sip input");
    }

    fn media_in(&mut self, now: Instant, stream: usize, m: MediaInput) {
        let id = self.id();
        self.input(now, Input::Media(id, stream, m))
            .expect("media input");
    }

    fn secure(&mut self, now: Instant, sas: &str) {
        self.media_in(
            now,
            0,
            MediaInput::Secure {
                sas: sas.into(),
                verified: false,
                cache_mismatch: false,
                new_key: false,
                algorithms: "X255/AES1/S256/HS80/B32".into(),
            },
        );
    }

    /// Carries out the machine's outputs: SIP onto the wire, media started at once.
    fn pump(&mut self, now: Instant) {
        while let Some(out) = self.core.poll() {
            self.log.push((now, out.clone()));
            match out {
                Output::Event(e) => self.events.push(e),
                Output::Media(id, i, action) => {
                    let start = match &action {
                        MediaAction::Start(s)
                            if s.kind == MediaKind::Video && self.video_start_fails =>
                        {
                            Some(MediaInput::StartFailed("the video file is not Y4M".into()))
                        }
                        MediaAction::Start(_) => Some(MediaInput::Started),
                        _ => None,
                    };
                    self.media.push((i, action));
                    if let Some(report) = start {
                        let _ = self.core.handle(now, Input::Media(id, i, report));
                    }
                }
                Output::Release(_, p) => self.released.push(p),
                Output::Sip(_, action) => {
                    self.sip.push(action.clone());
                    self.outbox.push_back(match action {
                        SipAction::Invite { sdp, .. } => Wire::Invite(sdp),
                        SipAction::Answer(sdp) => Wire::Ok(sdp),
                        SipAction::Reject(r) => Wire::Reject(r),
                        SipAction::Hangup => Wire::Bye,
                        SipAction::ReInvite(sdp) => Wire::ReInvite(sdp),
                        SipAction::AcceptReInvite(sdp) => Wire::ReInviteOk(sdp),
                        SipAction::RefuseReInvite(r) => Wire::ReInviteRefused(r),
                    });
                }
            }
        }
    }

    fn view(&self) -> Option<CallView> {
        self.call
            .and_then(|id| self.core.views().into_iter().find(|v| v.id == id))
    }

    fn state(&self) -> CallState {
        match self.view() {
            Some(v) => v.state,
            None => self
                .core
                .ended_views()
                .last()
                .map_or(CallState::Ended("never".into()), |v| v.state.clone()),
        }
    }

    fn security(&self) -> CallSecurity {
        self.view()
            .map_or(CallSecurity::Failed("gone".into()), |v| v.security)
    }

    /// The media actions on stream `i` since the last look.
    fn take_media(&mut self) -> Vec<(usize, MediaAction)> {
        std::mem::take(&mut self.media)
    }
}

impl Endpoint for Phone {
    type Message = Wire;

    fn transmit(&mut self, _now: Instant) -> Option<Wire> {
        self.outbox.pop_front()
    }

    fn receive(&mut self, now: Instant, m: Wire) {
        match m {
            Wire::Invite(sdp) => {
                if self.call.is_some() {
                    return; // a duplicate
                }
                let id = self.core.allocate();
                self.call = Some(id);
                let _ = self.core.handle(
                    now,
                    Input::Incoming {
                        id,
                        account: None,
                        from: "alice@10.0.0.1".into(),
                        offer: sdp.into_bytes(),
                        policy: self.policy,
                        addr: self.addr,
                        session_id: 9,
                        automatic: false,
                    },
                );
                self.pump(now);
                if self.core.is_ringing(id) {
                    self.outbox.push_back(Wire::Ringing);
                    if self.auto_answer {
                        self.answer(now).expect("answer");
                    }
                }
            }
            Wire::Ringing => self.sip_in(now, SipInput::Ringing),
            Wire::Ok(sdp) => self.sip_in(now, SipInput::Answered(sdp.into_bytes())),
            Wire::Reject(r) => self.sip_in(now, SipInput::Ended(format!("{r:?}"))),
            Wire::Bye => self.sip_in(now, SipInput::Ended("the other side hung up".into())),
            Wire::ReInvite(sdp) => {
                // As the driver does: a video stream the offer adds gets one prepared,
                // in a call the user chose video for.
                let body = sdp.into_bytes();
                if self.video && !self.no_added_video && self.core.video_to_accept(self.id(), &body)
                {
                    let video = self.added_video(self.released.len() as u16);
                    let camera = self.video;
                    self.sip_in(
                        now,
                        SipInput::ReInviteWithVideo {
                            body,
                            video,
                            camera,
                        },
                    );
                } else {
                    self.sip_in(now, SipInput::ReInvite(body));
                }
            }
            Wire::ReInviteOk(sdp) => {
                self.sip_in(now, SipInput::ReInviteAnswered(Ok(sdp.into_bytes())))
            }
            Wire::ReInviteRefused(r) => self.sip_in(
                now,
                SipInput::ReInviteAnswered(Err(match r {
                    Refusal::Pending => ReInviteFailure::Glare,
                    Refusal::NotAcceptable => ReInviteFailure::Refused("488".into()),
                })),
            ),
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        self.pump(now);
    }
}

fn pair(conditions: Conditions, seed: u64) -> Pair<Phone, Phone> {
    Pair::new(
        Phone::new(ALICE, seed),
        Phone::new(BOB, seed + 1),
        conditions,
        seed,
    )
}

/// Alice calls Bob, who answers; both sides' media say "secure".
fn secure_call(conditions: Conditions, seed: u64) -> Pair<Phone, Phone> {
    let mut p = pair(conditions, seed);
    p.a.place(p.now);
    assert!(p.drive_until(
        |p| p.a.state() == CallState::Connected && p.b.state() == CallState::Connected
    ));
    let now = p.now;
    p.a.secure(now, "ab12");
    p.b.secure(now, "ab12");
    p.drive();
    p
}

fn starts(media: &[(usize, MediaAction)]) -> Vec<(usize, StreamStart)> {
    media
        .iter()
        .filter_map(|(i, a)| match a {
            MediaAction::Start(s) => Some((*i, s.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_goes_secure_over_a_slow_duplicating_network_in_simulated_time() {
    for seed in 0..20 {
        let conditions = Conditions {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(30),
            loss_per_mille: 0,
            duplicate_per_mille: 300,
        };
        let mut p = secure_call(conditions, seed);
        for phone in [&mut p.a, &mut p.b] {
            let v = phone.view().expect("live");
            assert_eq!(v.state, CallState::Connected, "seed {seed}");
            assert_eq!(
                v.security,
                CallSecurity::Secure {
                    sas: "ab12".into(),
                    verified: false
                }
            );
            assert_eq!(v.codec.as_deref(), Some("opus"));
            assert_eq!(v.streams.len(), 1);
            assert_eq!(v.streams[0].kind, StreamKind::Audio);
            let s = starts(&phone.take_media());
            assert_eq!(
                s.len(),
                1,
                "one start, whatever was duplicated (seed {seed})"
            );
        }
        assert_eq!(
            p.b.sip
                .iter()
                .filter(|s| matches!(s, SipAction::Answer(_)))
                .count(),
            1,
            "one 200 (seed {seed})"
        );
    }
}

#[test]
fn each_side_starts_its_media_towards_the_other_with_the_signalled_hash() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 1);
    p.a.place(p.now);
    p.drive();
    let a = starts(&p.a.take_media());
    let b = starts(&p.b.take_media());
    assert_eq!(a[0].1.remote, SocketAddr::new(BOB, 4000));
    assert_eq!(a[0].1.peer_hash, Some(hash('b')));
    assert_eq!(b[0].1.remote, SocketAddr::new(ALICE, 4000));
    assert_eq!(b[0].1.peer_hash, Some(hash('a')));
    assert_eq!(a[0].1.policy, EncryptionPolicy::Mandatory);
    // The 200 went out only after Bob's media was told to start (and said it runs).
    let at = |f: &dyn Fn(&Output) -> bool| p.b.log.iter().position(|(_, o)| f(o));
    let started = at(&|o| matches!(o, Output::Media(_, 0, MediaAction::Start(_))));
    let answered = at(&|o| matches!(o, Output::Sip(_, SipAction::Answer(_))));
    assert!(
        matches!((started, answered), (Some(s), Some(a)) if s < a),
        "{started:?} {answered:?}"
    );
}

#[test]
fn a_mandatory_call_whose_peer_does_not_encrypt_is_hung_up_with_the_reason() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 2);
    p.a.place(p.now);
    p.drive();
    let now = p.now;
    // The media layer (wrongly, or a future one) says cleartext under Mandatory.
    p.a.media_in(
        now,
        0,
        MediaInput::Cleartext("the peer does not do ZRTP".into()),
    );
    p.drive();
    assert!(matches!(p.a.state(), CallState::Ended(r) if r.contains("encryption is mandatory")));
    assert!(p.a.sip.contains(&SipAction::Hangup));
    assert!(
        p.a.take_media()
            .iter()
            .any(|(_, a)| *a == MediaAction::Stop)
    );
    assert!(
        matches!(p.b.state(), CallState::Ended(r) if r.contains("hung up")),
        "Bob hears the BYE"
    );
    // And a media failure ends it the same way.
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 3);
    p.a.place(p.now);
    p.drive();
    let now = p.now;
    p.b.media_in(now, 0, MediaInput::Failed("ZRTP failed: no answer".into()));
    p.drive();
    assert!(matches!(p.b.state(), CallState::Ended(r) if r.contains("ZRTP failed")));
    let ended = p.b.core.ended_views();
    assert!(matches!(&ended[0].security, CallSecurity::Failed(r) if r.contains("ZRTP failed")));
    assert!(matches!(p.a.state(), CallState::Ended(_)));
}

#[test]
fn a_best_effort_call_in_cleartext_says_so_and_goes_on() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 4);
    p.a.policy = EncryptionPolicy::BestEffort;
    p.a.place(p.now);
    p.drive();
    let now = p.now;
    p.a.media_in(
        now,
        0,
        MediaInput::Cleartext("the peer does not do ZRTP".into()),
    );
    assert_eq!(p.a.state(), CallState::Connected);
    assert_eq!(p.a.security(), CallSecurity::Cleartext);
    assert!(p.a.events.iter().any(|e| matches!(
        e,
        Event::CallSecurity {
            security: CallSecurity::Cleartext,
            ..
        }
    )));
}

#[test]
fn a_sas_mismatch_ends_the_call_and_withdraws_the_verdict() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(5)), 5);
    let now = p.now;
    p.a.take_media();
    p.a.input(now, Input::SasMismatch { id: p.a.id() })
        .expect("mismatch");
    p.drive();
    assert!(matches!(p.a.state(), CallState::Ended(r) if r.starts_with("SAS mismatch")));
    let media = p.a.take_media();
    assert!(media.contains(&(0, MediaAction::SasVerified(false))));
    assert!(media.contains(&(0, MediaAction::Stop)));
    assert!(matches!(p.b.state(), CallState::Ended(_)));
    // Before the call is secure there is nothing to compare.
    let mut p = pair(Conditions::perfect(), 6);
    p.a.place(p.now);
    p.drive();
    let now = p.now;
    let id = p.a.id();
    assert!(p.a.input(now, Input::SasMismatch { id }).is_err());
    assert_eq!(p.a.state(), CallState::Connected);
}

#[test]
fn withdrawing_a_verdict_never_hides_a_key_warning() {
    let mut p = pair(Conditions::perfect(), 7);
    p.a.place(p.now);
    p.drive();
    let now = p.now;
    p.a.media_in(
        now,
        0,
        MediaInput::Secure {
            sas: "zz99".into(),
            verified: false,
            cache_mismatch: true,
            new_key: false,
            algorithms: "X255".into(),
        },
    );
    let id = p.a.id();
    p.a.input(
        now,
        Input::SetVerified {
            id,
            verified: false,
        },
    )
    .expect("withdraw");
    assert_eq!(
        p.a.security(),
        CallSecurity::CacheMismatch { sas: "zz99".into() }
    );
    p.a.input(now, Input::SetVerified { id, verified: true })
        .expect("confirm");
    assert_eq!(
        p.a.security(),
        CallSecurity::Secure {
            sas: "zz99".into(),
            verified: true
        }
    );
}

#[test]
fn both_sides_hold_and_the_call_resumes_only_when_both_let_go() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(20)), 8);
    let hold = |p: &mut Pair<Phone, Phone>, alice: bool, on: bool| {
        let now = p.now;
        let phone = if alice { &mut p.a } else { &mut p.b };
        let id = phone.id();
        phone.input(now, Input::Hold { id, on }).expect("hold");
        p.drive();
    };
    let last_hold = |phone: &Phone| {
        phone.media.iter().rev().find_map(|(_, a)| match a {
            MediaAction::Hold(h) => Some(*h),
            _ => None,
        })
    };
    hold(&mut p, true, true);
    assert_eq!(
        (p.a.state(), p.b.state()),
        (CallState::OnHold, CallState::OnHold)
    );
    assert_eq!((last_hold(&p.a), last_hold(&p.b)), (Some(true), Some(true)));
    hold(&mut p, false, true);
    assert_eq!(
        (p.a.state(), p.b.state()),
        (CallState::OnHold, CallState::OnHold)
    );
    hold(&mut p, true, false);
    assert_eq!(
        (p.a.state(), p.b.state()),
        (CallState::OnHold, CallState::OnHold),
        "Bob still holds"
    );
    assert_eq!((last_hold(&p.a), last_hold(&p.b)), (Some(true), Some(true)));
    hold(&mut p, false, false);
    assert_eq!(
        (p.a.state(), p.b.state()),
        (CallState::Connected, CallState::Connected)
    );
    assert_eq!(
        (last_hold(&p.a), last_hold(&p.b)),
        (Some(false), Some(false))
    );
    // Holding kept the keys: both still secure.
    assert!(p.a.security().is_encrypted() && p.b.security().is_encrypted());
}

/// Bob's current view of Alice's offer, rewritten by `edit` and sent as a re-INVITE
/// from "Alice": what an attacker in the signalling path could do.
fn forged_reinvite(p: &mut Pair<Phone, Phone>, edit: impl Fn(String) -> String) -> Vec<SipAction> {
    let original =
        p.a.sip
            .iter()
            .find_map(|s| match s {
                SipAction::Invite { sdp, .. } => Some(sdp.clone()),
                _ => None,
            })
            .expect("alice's offer");
    let forged = edit(original.replace("o=hushphone 7 1", "o=hushphone 7 9"));
    let before = p.b.sip.len();
    p.b.take_media();
    let now = p.now;
    p.b.sip_in(now, SipInput::ReInvite(forged.into_bytes()));
    p.b.sip[before..].to_vec()
}

/// A rewrite of an SDP body.
type Edit = Box<dyn Fn(String) -> String>;

#[test]
fn re_invites_that_would_weaken_a_secure_call_are_refused() {
    let attempts: [(&str, Edit); 6] = [
        (
            "drop the zrtp-hash",
            Box::new(|s| s.replace(&format!("a=zrtp-hash:{}\r\n", hash('a')), "")),
        ),
        (
            "change the zrtp-hash",
            Box::new(|s| s.replace(&hash('a'), &hash('e'))),
        ),
        (
            "move to SDES RTP/SAVP",
            Box::new(|s| s.replace("RTP/AVP", "RTP/SAVP")),
        ),
        (
            "move to a codec we lack",
            Box::new(|s| {
                s.replace(
                    "m=audio 4000 RTP/AVP 111 0 8 100 101",
                    "m=audio 4000 RTP/AVP 18",
                )
            }),
        ),
        (
            "remove the audio stream",
            Box::new(|s| s.replace("m=audio 4000", "m=audio 0")),
        ),
        (
            "garble the body",
            Box::new(|s| s.replace("v=0", "v=banana")),
        ),
    ];
    for (what, edit) in attempts {
        let mut p = secure_call(Conditions::perfect(), 9);
        let security = p.b.security();
        let answered = forged_reinvite(&mut p, edit);
        assert_eq!(
            answered,
            vec![SipAction::RefuseReInvite(Refusal::NotAcceptable)],
            "{what}"
        );
        assert_eq!(p.b.security(), security, "{what}: the call stays as secure");
        assert_eq!(p.b.state(), CallState::Connected, "{what}");
        assert!(
            p.b.take_media().is_empty(),
            "{what}: the media is untouched"
        );
    }
}

#[test]
fn a_re_invite_keeping_the_keys_may_move_and_hold_the_stream() {
    let mut p = secure_call(Conditions::perfect(), 10);
    let answered = forged_reinvite(&mut p, |s| {
        s.replace("c=IN IP4 10.0.0.1", "c=IN IP4 10.0.0.9")
            .replace("a=sendrecv", "a=sendonly")
    });
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(sdp)] if sdp.contains("a=recvonly"))
    );
    let media = p.b.take_media();
    assert!(media.contains(&(
        0,
        MediaAction::SetRemote {
            rtp: SocketAddr::new(IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, 9)), 4000),
            rtcp: SocketAddr::new(IpAddr::V4(core::net::Ipv4Addr::new(10, 0, 0, 9)), 4000),
        }
    )));
    assert!(media.contains(&(0, MediaAction::Hold(true))));
    assert_eq!(p.b.state(), CallState::OnHold);
    assert!(p.b.security().is_encrypted());
}

#[test]
fn a_best_effort_call_without_zrtp_may_be_re_invited_without_a_hash() {
    let mut p = pair(Conditions::perfect(), 11);
    p.a.policy = EncryptionPolicy::BestEffort;
    p.b.policy = EncryptionPolicy::BestEffort;
    p.a.place(p.now);
    p.drive();
    let now = p.now;
    p.b.media_in(now, 0, MediaInput::Cleartext("no ZRTP".into()));
    // Nothing to lose: a cleartext stream cannot be weakened by dropping the hash...
    let answered = forged_reinvite(&mut p, |s| {
        s.replace(&format!("a=zrtp-hash:{}\r\n", hash('a')), "")
    });
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(_)]),
        "{answered:?}"
    );
    // ...but losing the codec is worse than cleartext.
    let answered = forged_reinvite(&mut p, |s| {
        s.replace(
            "m=audio 4000 RTP/AVP 111 0 8 100 101",
            "m=audio 4000 RTP/AVP 18",
        )
    });
    assert_eq!(
        answered,
        vec![SipAction::RefuseReInvite(Refusal::NotAcceptable)],
        "no codec is worse than cleartext"
    );
}

#[test]
fn glare_is_answered_491_and_both_holds_land_after_the_back_off() {
    for seed in 0..10 {
        let mut p = secure_call(Conditions::latency(Duration::from_millis(30)), 100 + seed);
        let now = p.now;
        let (a, b) = (p.a.id(), p.b.id());
        p.a.input(now, Input::Hold { id: a, on: true })
            .expect("hold");
        p.b.input(now, Input::Hold { id: b, on: true })
            .expect("hold");
        let start = p.now;
        p.drive();
        assert!(
            p.a.sip
                .contains(&SipAction::RefuseReInvite(Refusal::Pending))
                && p.b
                    .sip
                    .contains(&SipAction::RefuseReInvite(Refusal::Pending)),
            "both re-INVITEs crossed: 491 each (seed {seed})"
        );
        assert_eq!(
            (p.a.state(), p.b.state()),
            (CallState::OnHold, CallState::OnHold),
            "seed {seed}"
        );
        // The callee retried within 2 s; the caller after 2.1 s, and once.
        let waited = p.now - start;
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        let sent = |ph: &Phone| -> Vec<Instant> {
            ph.log
                .iter()
                .filter(|(_, o)| matches!(o, Output::Sip(_, SipAction::ReInvite(_))))
                .map(|(t, _)| *t)
                .collect()
        };
        let (a, b) = (sent(&p.a), sent(&p.b));
        assert_eq!((a.len(), b.len()), (2, 2), "one retry each (seed {seed})");
        // RFC 3261 §14.1 from the 491: the caller 2.1-4 s, the callee 0-2 s (plus the
        // 30 ms the 491 took to arrive).
        let (wa, wb) = (a[1] - a[0], b[1] - b[0]);
        assert!(
            wa >= Duration::from_millis(2100) && wa <= Duration::from_millis(4100),
            "caller waited {wa:?} (seed {seed})"
        );
        assert!(
            wb <= Duration::from_millis(2100),
            "callee waited {wb:?} (seed {seed})"
        );
        // Both holds really landed: each side's media holds.
        for ph in [&p.a, &p.b] {
            let last = ph.media.iter().rev().find_map(|(_, a)| match a {
                MediaAction::Hold(h) => Some(*h),
                _ => None,
            });
            assert_eq!(last, Some(true), "seed {seed}");
        }
        assert!(p.a.core.poll_timeout().is_none() && p.b.core.poll_timeout().is_none());
    }
}

#[test]
fn an_unanswered_re_invite_holds_up_nothing() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(5)), 12);
    p.a_to_b.cut = true; // Bob never hears (nor answers) Alice's re-INVITE.
    let now = p.now;
    let id = p.a.id();
    p.a.input(now, Input::Hold { id, on: true }).expect("hold");
    p.drive();
    // A second call, DTMF and the hang-up all go on meanwhile.
    let second = p.a.core.allocate();
    let streams = p.a.prepared();
    p.a.input(
        now,
        Input::Place {
            id: second,
            account: None,
            peer: "carol@10.0.0.3".into(),
            policy: EncryptionPolicy::Mandatory,
            addr: ALICE,
            session_id: 8,
            streams,
        },
    )
    .expect("second call");
    assert!(
        p.a.sip
            .iter()
            .filter(|s| matches!(s, SipAction::Invite { .. }))
            .count()
            == 2
    );
    p.a.input(
        now,
        Input::Dtmf {
            id,
            keys: "12#".into(),
        },
    )
    .expect("dtmf");
    assert_eq!(
        p.a.take_media()
            .iter()
            .filter(|(_, a)| matches!(a, MediaAction::Dtmf(_)))
            .count(),
        3
    );
    // The transaction gives up at last: the hold did not happen, and the user is told.
    p.a.sip_in(
        now,
        SipInput::ReInviteAnswered(Err(ReInviteFailure::Refused("no answer".into()))),
    );
    assert_eq!(p.a.state(), CallState::Connected);
    let media = p.a.take_media();
    assert!(media.contains(&(0, MediaAction::Hold(false))), "{media:?}");
    assert!(!media.contains(&(0, MediaAction::Hold(true))), "{media:?}");
    assert!(p.a.events.iter().any(|e| matches!(
        e,
        Event::CommandFailed {
            command: "hold",
            ..
        }
    )));
    p.a.input(now, Input::Hangup { id }).expect("hangup");
    assert!(matches!(p.a.state(), CallState::Ended(r) if r == "hung up"));
}

#[test]
fn a_failed_answer_keeps_the_call_ringing_and_sends_no_200() {
    let mut p = pair(Conditions::perfect(), 13);
    p.b.auto_answer = false;
    p.a.place(p.now);
    p.drive();
    assert_eq!(p.a.state(), CallState::Ringing);
    let now = p.now;
    let id = p.b.id();
    let wanted = p.b.core.wanted_streams(id);
    let streams =
        p.b.prepared()
            .into_iter()
            .filter(|s| wanted.contains(&s.kind))
            .collect();
    p.b.core
        .handle(now, Input::Answer { id, streams })
        .expect("answer");
    // The media layer fails to start this time.
    while let Some(out) = p.b.core.poll() {
        if let Output::Media(id, i, MediaAction::Start(_)) = out {
            p.b.core
                .handle(
                    now,
                    Input::Media(id, i, MediaInput::StartFailed("no sound card".into())),
                )
                .expect("report");
        }
        assert!(
            !matches!(out, Output::Sip(_, SipAction::Answer(_))),
            "no 200 without media"
        );
    }
    assert!(p.b.core.is_ringing(id));
    p.b.answer(now).expect("answered on the second try");
    p.drive();
    assert_eq!(
        (p.a.state(), p.b.state()),
        (CallState::Connected, CallState::Connected)
    );
}

#[test]
fn an_offer_we_cannot_carry_is_refused_with_488_and_makes_no_call() {
    let mut b = Phone::new(BOB, 14);
    let now = Instant::now();
    for offer in [
        "garbage".to_owned(),
        "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n".to_owned(),
        "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\n".to_owned(),
        "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n".to_owned(),
        // Media to a multicast group or a broadcast address, however written.
        "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 224.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_owned(),
        "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 255.255.255.255\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_owned(),
        "v=0\r\no=x 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::ffff:224.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_owned(),
        "v=0\r\no=x 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ff02::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_owned(),
    ] {
        b.receive(now, Wire::Invite(offer.clone()));
        assert_eq!(b.sip.pop(), Some(SipAction::Reject(Rejection::NotAcceptable)), "{offer}");
        assert!(b.core.views().is_empty());
        b.call = None;
    }
}

#[test]
fn audio_and_video_each_get_their_stream_and_hash_and_video_can_be_removed() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 15);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let offer = match &p.a.sip[0] {
        SipAction::Invite { sdp, .. } => sdp.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        offer.contains("m=video 4002 RTP/AVP 96") && offer.contains(&hash('c')),
        "{offer}"
    );
    let a = starts(&p.a.take_media());
    assert_eq!(a.len(), 2);
    assert_eq!(
        (a[1].0, a[1].1.kind, a[1].1.peer_hash.clone()),
        (1, MediaKind::Video, Some(hash('d')))
    );
    let kinds = |ph: &Phone| {
        ph.view()
            .map(|v| v.streams.iter().map(|s| s.kind).collect::<Vec<_>>())
    };
    assert_eq!(
        kinds(&p.a),
        Some(vec![StreamKind::Audio, StreamKind::Video])
    );
    // Each stream keys itself: the call is as secure as its weakest stream.
    let now = p.now;
    p.a.secure(now, "ab12");
    assert_eq!(
        p.a.security(),
        CallSecurity::Negotiating,
        "video not keyed yet"
    );
    p.a.media_in(
        now,
        1,
        MediaInput::Secure {
            sas: "ab12".into(),
            verified: false,
            cache_mismatch: false,
            new_key: false,
            algorithms: "X255".into(),
        },
    );
    assert!(p.a.security().is_encrypted());
    // Bob turns his camera off: the video m-line goes to port 0; Alice stops it.
    let answered = forged_reinvite_from_b(&mut p, |s| s.replace("m=video 4002", "m=video 0"));
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(sdp)] if sdp.contains("m=video 0 ")),
        "{answered:?}"
    );
    assert!(p.a.take_media().contains(&(1, MediaAction::Stop)));
    assert_eq!(kinds(&p.a), Some(vec![StreamKind::Audio]));
    assert!(p.a.security().is_encrypted());
}

/// Alice receives Bob's answer, edited, as Bob's re-INVITE offer.
fn forged_reinvite_from_b(
    p: &mut Pair<Phone, Phone>,
    edit: impl Fn(String) -> String,
) -> Vec<SipAction> {
    let original =
        p.b.sip
            .iter()
            .find_map(|s| match s {
                SipAction::Answer(sdp) => Some(sdp.clone()),
                _ => None,
            })
            .expect("bob's answer");
    let before = p.a.sip.len();
    let now = p.now;
    p.a.sip_in(now, SipInput::ReInvite(edit(original).into_bytes()));
    p.a.sip[before..].to_vec()
}

#[test]
fn a_video_offer_to_a_phone_without_a_camera_is_answered_with_audio_alone() {
    let mut p = pair(Conditions::perfect(), 16);
    p.a.video = true;
    p.a.place(p.now);
    p.drive();
    let answer = p.b.sip.iter().find_map(|s| match s {
        SipAction::Answer(sdp) => Some(sdp.clone()),
        _ => None,
    });
    let answer = answer.expect("answered");
    assert!(
        answer.contains("m=video 0 RTP/AVP"),
        "the m-line stays, refused: {answer}"
    );
    assert_eq!(p.a.state(), CallState::Connected);
    assert_eq!(starts(&p.a.take_media()).len(), 1, "Alice runs audio only");
    assert_eq!(p.a.view().map(|v| v.streams.len()), Some(1));
}

#[test]
fn a_peer_answering_491_to_everything_gets_three_tries_then_the_user_is_told() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(10)), 17);
    let now = p.now;
    let id = p.a.id();
    p.a.input(now, Input::Hold { id, on: true }).expect("hold");
    let mut tries = 0;
    // Bob's side is replaced by a peer that answers 491 to every re-INVITE.
    for _ in 0..10 {
        let Some(Wire::ReInvite(_)) = p.a.outbox.pop_front() else {
            break;
        };
        tries += 1;
        let now = p.now;
        p.a.receive(now, Wire::ReInviteRefused(Refusal::Pending));
        match p.a.core.poll_timeout() {
            Some(t) => {
                p.now = t;
                p.a.timeout(t);
            }
            None => break,
        }
    }
    assert_eq!(tries, 3);
    assert!(p.a.core.poll_timeout().is_none(), "no more retries");
    assert!(p.a.events.iter().any(
        |e| matches!(e, Event::CommandFailed { command: "hold", error, permanent: false } if error.contains("491"))
    ));
    assert_eq!(p.a.state(), CallState::Connected, "the hold did not land");
}

#[test]
fn hold_then_resume_before_the_answer_with_the_resume_refused_leaves_the_call_held_as_agreed() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(10)), 18);
    let now = p.now;
    let id = p.a.id();
    p.a.input(now, Input::Hold { id, on: true }).expect("hold");
    p.a.input(now, Input::Hold { id, on: false })
        .expect("resume at once");
    // Bob agrees to the hold; Alice then sends the resume, which is refused (the
    // refusal is handed to Alice before Bob's own answer could arrive).
    p.drive_until(|p| {
        p.a.sip
            .iter()
            .filter(|s| matches!(s, SipAction::ReInvite(_)))
            .count()
            == 2
    });
    let now = p.now;
    p.a.receive(now, Wire::ReInviteRefused(Refusal::NotAcceptable));
    // The call is as Bob last agreed: held, on screen and in the media.
    assert_eq!(p.a.state(), CallState::OnHold);
    let last = p.a.media.iter().rev().find_map(|(_, a)| match a {
        MediaAction::Hold(h) => Some(*h),
        _ => None,
    });
    assert_eq!(last, Some(true));
    // And Bob's next re-INVITE (a refresh) is answered consistently: still held.
    let answered =
        forged_reinvite_from_b(&mut p, |s| s.replace("o=hushphone 9 1", "o=hushphone 9 5"));
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(sdp)] if sdp.contains("a=sendonly")),
        "{answered:?}"
    );
}

#[test]
fn a_re_invite_sending_media_to_a_broadcast_or_multicast_address_is_refused() {
    for addr in ["255.255.255.255", "224.0.0.1"] {
        let mut p = secure_call(Conditions::perfect(), 19);
        let answered = forged_reinvite(&mut p, |s| {
            s.replace("c=IN IP4 10.0.0.1", &format!("c=IN IP4 {addr}"))
        });
        assert_eq!(
            answered,
            vec![SipAction::RefuseReInvite(Refusal::NotAcceptable)],
            "{addr}"
        );
    }
    // 0.0.0.0 is the old way to hold: accepted, and the media stays where it was.
    let mut p = secure_call(Conditions::perfect(), 20);
    let answered = forged_reinvite(&mut p, |s| {
        s.replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0")
    });
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(_)]),
        "{answered:?}"
    );
    let media = p.b.take_media();
    assert!(
        !media
            .iter()
            .any(|(_, a)| matches!(a, MediaAction::SetRemote { .. })),
        "{media:?}"
    );
    assert!(media.contains(&(0, MediaAction::Hold(true))));
    assert_eq!(p.b.state(), CallState::OnHold);
}

#[test]
fn when_one_of_two_streams_fails_to_start_the_other_is_stopped_and_the_call_rings_on() {
    let mut p = pair(Conditions::perfect(), 21);
    p.a.video = true;
    p.b.video = true;
    p.b.auto_answer = false;
    p.a.place(p.now);
    p.drive();
    let now = p.now;
    let id = p.b.id();
    let streams = p.b.prepared();
    p.b.core
        .handle(now, Input::Answer { id, streams })
        .expect("answer");
    let mut actions = Vec::new();
    while let Some(out) = p.b.core.poll() {
        if let Output::Media(id, i, a) = &out {
            actions.push((*i, a.clone()));
            if matches!(a, MediaAction::Start(_)) {
                // Audio fails; the video's start is already on its way.
                let report = if *i == 0 {
                    MediaInput::StartFailed("no microphone".into())
                } else {
                    MediaInput::Started
                };
                p.b.core
                    .handle(now, Input::Media(*id, *i, report))
                    .expect("report");
            }
        }
        assert!(
            !matches!(out, Output::Sip(_, SipAction::Answer(_))),
            "no 200"
        );
    }
    assert!(actions.contains(&(1, MediaAction::Stop)), "{actions:?}");
    assert!(p.b.core.is_ringing(id));
}

#[test]
fn the_machine_touches_no_socket_task_or_clock() {
    // The rule of the call core, checked on its source: I/O and time come from the
    // driver, never from here.
    for (file, text) in [
        ("mod.rs", include_str!("mod.rs")),
        ("offer.rs", include_str!("offer.rs")),
    ] {
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for banned in [
            "tokio",
            "std::net",
            "Instant::now",
            "SystemTime",
            "thread",
            "spawn",
            "UdpSocket",
            "TcpStream",
            "TcpListener",
        ] {
            assert!(!code.contains(banned), "{file} uses {banned}");
        }
    }
}

#[test]
fn a_video_stream_that_cannot_be_keyed_ends_alone_and_the_call_goes_on_with_audio() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 16);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    assert_eq!(starts(&p.a.take_media()).len(), 2);
    let now = p.now;
    p.a.secure(now, "ab12");
    // The peer refuses multistream: the video channel fails.
    p.a.media_in(
        now,
        1,
        MediaInput::Failed("the video stream was not keyed: no multistream".into()),
    );
    assert!(p.a.take_media().contains(&(1, MediaAction::Stop)));
    let view = p.a.view().expect("the call goes on");
    assert_eq!(view.state, CallState::Connected);
    assert_eq!(
        view.streams.iter().map(|s| s.kind).collect::<Vec<_>>(),
        [StreamKind::Audio]
    );
    assert!(p.a.security().is_encrypted(), "{:?}", p.a.security());
    assert!(
        p.a.events.iter().any(|e| matches!(
            e,
            Event::CallStreamEnded { kind: StreamKind::Video, reason, .. } if reason.contains("multistream")
        )),
        "the user is told: {:?}",
        p.a.events
    );
    // And the peer by re-INVITE: the video line goes to port 0, so it stops sending.
    let (_, video) = last_reinvite(&p.a);
    assert!(video.starts_with("m=video 0 "), "{video}");
    p.drive();
    assert!(p.b.take_media().contains(&(1, MediaAction::Stop)));
    // The audio failing still ends the call.
    p.a.media_in(now, 0, MediaInput::Failed("the audio stream failed".into()));
    assert!(matches!(
        p.a.view().map(|v| v.state),
        None | Some(CallState::Ended(_))
    ));
}

#[test]
fn a_video_stream_that_cannot_start_is_refused_and_the_call_is_answered_with_audio() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 17);
    p.a.video = true;
    p.b.video = true;
    p.b.video_start_fails = true;
    p.a.place(p.now);
    p.drive();
    let answered =
        p.b.sip
            .iter()
            .find_map(|s| match s {
                SipAction::Answer(sdp) => Some(sdp.clone()),
                _ => None,
            })
            .expect("bob answers");
    assert!(answered.contains("m=video 0 "), "{answered}");
    assert_eq!(p.b.view().map(|v| v.state), Some(CallState::Connected));
    assert!(
        p.b.events.iter().any(|e| matches!(
            e,
            Event::CallStreamEnded {
                kind: StreamKind::Video,
                ..
            }
        )),
        "{:?}",
        p.b.events
    );
    assert_eq!(p.a.view().map(|v| v.state), Some(CallState::Connected));
}

/// The video line of the last re-INVITE `ph` sent, and its audio part.
fn last_reinvite(ph: &Phone) -> (String, String) {
    match ph.sip.last() {
        Some(SipAction::ReInvite(sdp)) => {
            let at = sdp.find("m=video").expect("video line");
            (sdp[..at].to_owned(), sdp[at..].to_owned())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_camera_goes_off_and_on_by_re_invite_and_a_peer_that_stops_taking_pictures_is_followed() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 18);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let _ = p.a.take_media();
    let id = p.a.id();
    let now = p.now;
    // Camera off: no pictures at once, and the peer is told (video recvonly, audio as
    // it was); its answer keeps them off.
    p.a.input(now, Input::Camera { id, on: false })
        .expect("camera off");
    assert!(p.a.take_media().contains(&(1, MediaAction::Camera(false))));
    let (audio, video) = last_reinvite(&p.a);
    assert!(video.contains("a=recvonly") && audio.contains("a=sendrecv"));
    p.drive();
    let media = p.a.take_media();
    assert!(
        !media.contains(&(1, MediaAction::Camera(true))),
        "{media:?}"
    );
    assert_eq!(p.a.state(), CallState::Connected);
    // The peer offers video both ways meanwhile: our answer still only receives, and
    // the camera stays off.
    let answered = forged_reinvite_from_b(&mut p, |s| s);
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(sdp)]
            if sdp[sdp.find("m=video").expect("video")..].contains("a=recvonly")),
        "{answered:?}"
    );
    assert!(!p.a.take_media().contains(&(1, MediaAction::Camera(true))));
    // Camera on again: pictures go once Bob's answer takes them, not before.
    let now = p.now;
    p.a.input(now, Input::Camera { id, on: true })
        .expect("camera on");
    assert!(!p.a.take_media().contains(&(1, MediaAction::Camera(true))));
    assert!(last_reinvite(&p.a).1.contains("a=sendrecv"));
    p.drive();
    assert!(p.a.take_media().contains(&(1, MediaAction::Camera(true))));
    // Bob stops taking pictures (his video line sendonly): Alice's stop.
    forged_reinvite_from_b(&mut p, |s| {
        let at = s.find("m=video").expect("video line");
        let (head, tail) = s.split_at(at);
        format!("{head}{}", tail.replace("a=sendrecv", "a=sendonly"))
    });
    assert!(p.a.take_media().contains(&(1, MediaAction::Camera(false))));
    // A call without video has no camera to turn.
    let mut q = pair(Conditions::perfect(), 19);
    q.a.place(q.now);
    q.drive();
    let qid = q.a.id();
    let now = q.now;
    assert!(
        q.a.input(now, Input::Camera { id: qid, on: false })
            .is_err()
    );
}

#[test]
fn a_camera_change_while_a_hold_is_under_way_is_offered_after_it() {
    let mut p = pair(Conditions::latency(Duration::from_millis(20)), 20);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let id = p.a.id();
    let now = p.now;
    p.a.input(now, Input::Hold { id, on: true }).expect("hold");
    let sent = p.a.sip.len();
    // Still unanswered: the camera goes off now, and is offered after the hold.
    p.a.input(now, Input::Camera { id, on: false })
        .expect("camera off");
    assert_eq!(p.a.sip.len(), sent, "one re-INVITE at a time");
    p.drive();
    let (audio, video) = last_reinvite(&p.a);
    assert!(audio.contains("a=sendonly"), "{audio}");
    assert!(video.contains("a=inactive"), "{video}");
    assert!(p.a.sip.len() > sent);
    // And held, nothing sends video, whatever the peer's answers say.
    let media = p.a.take_media();
    assert!(
        !media.contains(&(1, MediaAction::Camera(true))),
        "{media:?}"
    );
}

#[test]
fn an_answer_sending_media_to_a_multicast_group_ends_the_call_before_any_media() {
    let mut a = Phone::new(ALICE, 21);
    let now = Instant::now();
    a.place(now);
    let answer = "v=0\r\no=x 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::ffff:239.1.1.1\r\nt=0 0\r\n\
                  m=audio 4000 RTP/AVP 0\r\n"
        .to_owned();
    a.receive(now, Wire::Ok(answer));
    assert!(a.sip.contains(&SipAction::Hangup), "{:?}", a.sip);
    assert!(starts(&a.take_media()).is_empty(), "no media started");
}

#[test]
fn a_re_invite_moving_only_the_video_rtcp_port_moves_our_reports() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 22);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let _ = p.a.take_media();
    // Bob's answer muxed RTCP; his re-INVITE keeps the RTP address and drops the mux,
    // so his reports go to his own RTCP port from now on.
    let answered = forged_reinvite_from_b(&mut p, |s| s.replace("a=rtcp-mux\r\n", ""));
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(_)]),
        "{answered:?}"
    );
    let media = p.a.take_media();
    assert!(
        media.contains(&(
            1,
            MediaAction::SetRemote {
                rtp: SocketAddr::new(BOB, 4002),
                rtcp: SocketAddr::new(BOB, 4003),
            }
        )),
        "{media:?}"
    );
    // The audio did not move: nothing for it.
    assert!(
        !media
            .iter()
            .any(|(i, a)| *i == 0 && matches!(a, MediaAction::SetRemote { .. })),
        "{media:?}"
    );
}

/// The kinds of the streams a phone's view shows.
fn kinds(ph: &Phone) -> Vec<StreamKind> {
    ph.view()
        .map(|v| v.streams.iter().map(|s| s.kind).collect())
        .unwrap_or_default()
}

fn video_secure(ph: &mut Phone, now: Instant, stream: usize, sas: &str, verified: bool) {
    ph.media_in(
        now,
        stream,
        MediaInput::Secure {
            sas: sas.into(),
            verified,
            cache_mismatch: false,
            new_key: false,
            algorithms: "X255".into(),
        },
    );
}

#[test]
fn video_is_added_then_removed_by_re_invite_and_the_peer_only_watches_until_it_turns_its_camera_on()
{
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 21);
    // Bob is ready for video (a camera chosen), in a voice call.
    p.b.video = true;
    p.a.place(p.now);
    assert!(p.drive_until(
        |p| p.a.state() == CallState::Connected && p.b.state() == CallState::Connected
    ));
    let now = p.now;
    p.a.secure(now, "ab12");
    p.b.secure(now, "ab12");
    p.drive();
    let _ = (p.a.take_media(), p.b.take_media());
    let id = p.a.id();
    let now = p.now;
    // Alice adds video: a new m-line with its own hash, offered both ways.
    let stream = p.a.added_video(0);
    p.a.input(now, Input::AddVideo { id, stream })
        .expect("add video");
    let (_, video) = last_reinvite(&p.a);
    assert!(
        video.starts_with("m=video 5000 RTP/AVP 96")
            && video.contains("a=sendrecv")
            && video.contains(&hash('e')),
        "{video}"
    );
    p.drive();
    // Bob takes it to watch: his line only receives, and his stream starts without
    // sending; Alice's sends.
    let answer = p.b.sip.iter().rev().find_map(|s| match s {
        SipAction::AcceptReInvite(sdp) => Some(sdp.clone()),
        _ => None,
    });
    let answer = answer.expect("bob answers");
    let bob_video = &answer[answer.find("m=video").expect("video line")..];
    assert!(
        bob_video.starts_with("m=video 5000 ") && bob_video.contains("a=recvonly"),
        "{answer}"
    );
    let b_starts = starts(&p.b.take_media());
    assert_eq!(b_starts.len(), 1, "{b_starts:?}");
    assert_eq!(
        (b_starts[0].0, b_starts[0].1.kind, b_starts[0].1.sending),
        (1, MediaKind::Video, false)
    );
    assert_eq!(b_starts[0].1.peer_hash, Some(hash('e')));
    let a_starts = starts(&p.a.take_media());
    assert_eq!(a_starts.len(), 1, "{a_starts:?}");
    assert_eq!(
        (
            a_starts[0].0,
            a_starts[0].1.sending,
            a_starts[0].1.peer_hash.clone()
        ),
        (1, true, Some(hash('f')))
    );
    assert_eq!(kinds(&p.a), [StreamKind::Audio, StreamKind::Video]);
    assert_eq!(kinds(&p.b), [StreamKind::Audio, StreamKind::Video]);
    // Until the video is keyed the call shows the weakest stream; then secure again.
    assert_eq!(p.a.security(), CallSecurity::Negotiating);
    let now = p.now;
    video_secure(&mut p.a, now, 1, "ab12", false);
    assert!(p.a.security().is_encrypted());
    // Alice ends the video: stopped at once, its line offered with port 0, Bob stops too.
    p.a.input(now, Input::RemoveVideo { id })
        .expect("remove video");
    assert!(p.a.take_media().contains(&(1, MediaAction::Stop)));
    assert!(last_reinvite(&p.a).1.starts_with("m=video 0 "));
    p.drive();
    assert!(p.b.take_media().contains(&(1, MediaAction::Stop)));
    assert_eq!(kinds(&p.a), [StreamKind::Audio]);
    assert_eq!(kinds(&p.b), [StreamKind::Audio]);
    assert!(p.b.events.iter().any(|e| matches!(
        e,
        Event::CallStreamEnded {
            kind: StreamKind::Video,
            ..
        }
    )));
    assert!(p.a.security().is_encrypted());
    // Added again: the refused slot is reused (two m-lines, not three).
    let now = p.now;
    let stream = p.a.added_video(1);
    p.a.input(now, Input::AddVideo { id, stream })
        .expect("add again");
    let (_, video) = last_reinvite(&p.a);
    assert!(
        video.starts_with("m=video 5002 ") && !video[8..].contains("m=video"),
        "{video}"
    );
    p.drive();
    assert_eq!(kinds(&p.b), [StreamKind::Audio, StreamKind::Video]);
    assert_eq!(starts(&p.a.take_media()).len(), 1);
    assert_eq!(p.a.state(), CallState::Connected);
    // Once video runs it cannot be added twice.
    let now = p.now;
    let stream = p.a.added_video(2);
    assert!(p.a.input(now, Input::AddVideo { id, stream }).is_err());
    assert_eq!(p.a.released.last().map(|r| r.port), Some(5004));
}

#[test]
fn video_a_peer_declines_or_never_answers_is_released_and_the_user_told() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(5)), 22);
    p.b.no_added_video = true;
    let _ = p.a.take_media();
    let id = p.a.id();
    let now = p.now;
    let stream = p.a.added_video(0);
    p.a.input(now, Input::AddVideo { id, stream })
        .expect("add video");
    p.drive();
    // Declined (port 0): the stream is given back, nothing starts, the user is told.
    assert_eq!(
        p.a.released.iter().map(|r| r.port).collect::<Vec<_>>(),
        [5000]
    );
    assert!(starts(&p.a.take_media()).is_empty());
    assert_eq!(kinds(&p.a), [StreamKind::Audio]);
    assert!(p.a.events.iter().any(|e| matches!(
        e,
        Event::CommandFailed { command: "video", error, .. } if error.contains("declined")
    )));
    assert_eq!(p.a.state(), CallState::Connected);
    // Never answered: the added line is undone, so the next offer has the m-lines the
    // peer agreed to (the refused slot, now reused, as it was).
    let now = p.now;
    let stream = p.a.added_video(1);
    p.a.input(now, Input::AddVideo { id, stream })
        .expect("add video");
    p.a.sip_in(
        now,
        SipInput::ReInviteAnswered(Err(ReInviteFailure::Refused("408 timeout".into()))),
    );
    assert_eq!(p.a.released.last().map(|r| r.port), Some(5002));
    p.a.input(now, Input::Hold { id, on: true }).expect("hold");
    let (_, video) = last_reinvite(&p.a);
    assert!(video.starts_with("m=video 0 "), "{video}");
    let failed: Vec<&str> =
        p.a.events
            .iter()
            .filter_map(|e| match e {
                Event::CommandFailed { command, .. } => Some(*command),
                _ => None,
            })
            .collect();
    assert_eq!(failed, ["video", "video"]);
    // A camera change that fails is reported as the camera's, not the hold's.
    p.drive();
    let mut q = pair(Conditions::latency(Duration::from_millis(5)), 23);
    q.a.video = true;
    q.b.video = true;
    q.a.place(q.now);
    q.drive();
    let qid = q.a.id();
    let now = q.now;
    q.a.input(now, Input::Camera { id: qid, on: false })
        .expect("camera off");
    q.a.sip_in(
        now,
        SipInput::ReInviteAnswered(Err(ReInviteFailure::Refused("500".into()))),
    );
    assert!(q.a.events.iter().any(|e| matches!(
        e,
        Event::CommandFailed {
            command: "camera",
            ..
        }
    )));
}

#[test]
fn the_sas_verdict_is_the_key_exchanges_and_a_video_keyed_later_takes_it() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 24);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let id = p.a.id();
    let now = p.now;
    p.a.secure(now, "ab12");
    // The video is not keyed yet: the call shows it, but the SAS can be verified.
    assert_eq!(p.a.security(), CallSecurity::Negotiating);
    p.a.input(now, Input::SetVerified { id, verified: true })
        .expect("the audio's SAS is there to verify");
    assert!(
        p.a.take_media()
            .contains(&(0, MediaAction::SasVerified(true)))
    );
    assert_eq!(
        p.a.security(),
        CallSecurity::Negotiating,
        "video still keying"
    );
    // Keyed from that exchange (its event read the cache before the verdict): it
    // shows the verdict given.
    video_secure(&mut p.a, now, 1, "ab12", false);
    assert_eq!(
        p.a.security(),
        CallSecurity::Secure {
            sas: "ab12".into(),
            verified: true
        }
    );
    // Withdrawn: every stream keyed from it follows.
    p.a.input(
        now,
        Input::SetVerified {
            id,
            verified: false,
        },
    )
    .expect("withdraw");
    let view = p.a.view().expect("call");
    assert!(view.streams.iter().all(|s| s.security
        == CallSecurity::Secure {
            sas: "ab12".into(),
            verified: false
        }));
}

#[test]
fn video_added_as_the_peer_re_invites_waits_outside_the_m_lines_and_goes_on_the_retry() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(20)), 25);
    p.b.video = true;
    let (ida, idb) = (p.a.id(), p.b.id());
    let now = p.now;
    let stream = p.a.added_video(0);
    p.a.input(now, Input::AddVideo { id: ida, stream })
        .expect("add");
    p.b.input(now, Input::Hold { id: idb, on: true })
        .expect("hold");
    // The two re-INVITEs cross and are each answered 491.
    let waiting = |ph: &Phone, id: CallId| {
        ph.core
            .calls
            .get(&id)
            .is_some_and(|c| matches!(c.renegotiation, Renegotiation::RetryAt { .. }))
    };
    assert!(p.drive_until(|p| waiting(&p.a, ida)));
    // Meanwhile Alice's m-lines are those Bob agreed to: his hold, retried, is taken.
    assert_eq!(p.a.core.calls.get(&ida).map(|c| c.streams.len()), Some(1));
    p.drive();
    assert_eq!(p.a.state(), CallState::OnHold);
    assert_eq!(kinds(&p.a), [StreamKind::Audio, StreamKind::Video]);
    assert_eq!(kinds(&p.b), [StreamKind::Audio, StreamKind::Video]);
    assert!(p.a.released.is_empty(), "{:?}", p.a.released);
    let refused = |ph: &Phone| {
        ph.sip
            .iter()
            .filter(|s| matches!(s, SipAction::RefuseReInvite(Refusal::NotAcceptable)))
            .count()
    };
    assert_eq!(
        (refused(&p.a), refused(&p.b)),
        (0, 0),
        "nothing answered 488"
    );
}

#[test]
fn our_re_invite_waits_while_the_peers_is_held_for_its_video() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(5)), 26);
    let id = p.a.id();
    let now = p.now;
    p.a.core.peer_offer_pending(id);
    p.a.input(now, Input::Hold { id, on: true }).expect("hold");
    assert!(
        !p.a.sip.iter().any(|s| matches!(s, SipAction::ReInvite(_))),
        "held back: {:?}",
        p.a.sip
    );
    // The peer's re-INVITE is answered; ours goes right after.
    let answered = forged_reinvite_from_b(&mut p, |s| s);
    assert!(
        matches!(&answered[..], [SipAction::AcceptReInvite(_), SipAction::ReInvite(sdp)] if sdp.contains("a=sendonly")),
        "{answered:?}"
    );
}

#[test]
fn sharing_the_screen_swaps_the_source_says_slides_by_re_invite_and_goes_back() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 27);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let id = p.a.id();
    // The camera is off when sharing starts: sharing sends, and stopping puts it back
    // off.
    let now = p.now;
    p.a.input(now, Input::Camera { id, on: false })
        .expect("camera off");
    p.drive();
    let _ = p.a.take_media();
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: true })
        .expect("share");
    let media = p.a.take_media();
    assert!(
        media.contains(&(1, MediaAction::Source { screen: true })),
        "{media:?}"
    );
    // Sent once the peer's answer takes pictures again (our line was recvonly).
    assert!(
        !media.contains(&(1, MediaAction::Camera(true))),
        "{media:?}"
    );
    let (_, video) = last_reinvite(&p.a);
    assert!(
        video.contains("a=content:slides") && video.contains("a=sendrecv"),
        "{video}"
    );
    assert!(p.a.view().is_some_and(|v| v.sharing_screen));
    p.drive();
    assert!(p.a.take_media().contains(&(1, MediaAction::Camera(true))));
    // The viewer shows it as a screen, and does not claim slides for its own pictures.
    assert_eq!(kinds(&p.b), [StreamKind::Audio, StreamKind::Screen]);
    let answer = p.b.sip.iter().rev().find_map(|s| match s {
        SipAction::AcceptReInvite(sdp) => Some(sdp.clone()),
        _ => None,
    });
    assert!(answer.is_some_and(|a| !a.contains("a=content")));
    // Back to the camera: the attribute goes, the source swaps back, and the camera
    // is off again, as it was.
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: false })
        .expect("stop sharing");
    let media = p.a.take_media();
    assert!(media.contains(&(1, MediaAction::Source { screen: false })));
    assert!(
        media.contains(&(1, MediaAction::Camera(false))),
        "{media:?}"
    );
    let (_, video) = last_reinvite(&p.a);
    assert!(
        !video.contains("a=content") && video.contains("a=recvonly"),
        "{video}"
    );
    p.drive();
    assert_eq!(kinds(&p.b), [StreamKind::Audio, StreamKind::Video]);
    assert!(
        p.a.view()
            .is_some_and(|v| !v.sharing_screen && !v.camera_on)
    );
    // A call without video has nothing to swap (the driver adds video first).
    let mut q = pair(Conditions::perfect(), 28);
    q.a.place(q.now);
    q.drive();
    let (qid, now) = (q.a.id(), q.now);
    assert!(
        q.a.input(now, Input::ShareScreen { id: qid, on: true })
            .is_err()
    );
}

#[test]
fn sharing_ends_with_its_video_and_never_turns_the_camera_on() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 29);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let id = p.a.id();
    // Shared, then the camera turned off while sharing: stopping keeps it off.
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: true })
        .expect("share");
    p.drive();
    let now = p.now;
    p.a.input(now, Input::Camera { id, on: false })
        .expect("camera off");
    p.drive();
    let _ = p.a.take_media();
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: false })
        .expect("stop sharing");
    p.drive();
    let media = p.a.take_media();
    assert!(
        !media.contains(&(1, MediaAction::Camera(true))),
        "{media:?}"
    );
    assert!(
        p.a.view()
            .is_some_and(|v| !v.camera_on && !v.sharing_screen)
    );
    // Shared again; the peer removes the video: sharing ends with it.
    let now = p.now;
    p.a.input(now, Input::Camera { id, on: true })
        .expect("camera on");
    p.drive();
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: true })
        .expect("share");
    p.drive();
    assert!(p.a.view().is_some_and(|v| v.sharing_screen));
    forged_reinvite_from_b(&mut p, |s| s.replace("m=video 4002", "m=video 0"));
    assert!(p.a.view().is_some_and(|v| !v.sharing_screen));
    // The peer adds video again: watched with the camera off, not shared, and
    // "Stop sharing" has nothing to stop (the camera stays off).
    let stream = p.a.added_video(0);
    let now = p.now;
    let _ = p.a.take_media();
    let body = {
        let original = p.b.sip.iter().find_map(|s| match s {
            SipAction::Answer(sdp) => Some(sdp.clone()),
            _ => None,
        });
        original
            .expect("bob's answer")
            .replace("m=video 4002", "m=video 4012")
    };
    p.a.sip_in(
        now,
        SipInput::ReInviteWithVideo {
            body: body.into_bytes(),
            video: stream,
            camera: true,
        },
    );
    let view = p.a.view().expect("call");
    assert_eq!(kinds(&p.a), [StreamKind::Audio, StreamKind::Video]);
    assert!(!view.sharing_screen && !view.camera_on, "{view:?}");
    p.a.input(now, Input::ShareScreen { id, on: false })
        .expect("nothing to stop");
    let media = p.a.take_media();
    assert!(
        !media.contains(&(1, MediaAction::Camera(true))),
        "{media:?}"
    );
}

#[test]
fn a_share_the_peer_refuses_is_undone_and_a_refused_stop_stays_stopped() {
    let mut p = pair(Conditions::latency(Duration::from_millis(5)), 30);
    p.a.video = true;
    p.b.video = true;
    p.a.place(p.now);
    p.drive();
    let id = p.a.id();
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: true })
        .expect("share");
    let _ = p.a.take_media();
    // The peer refuses the re-INVITE that says slides: back to the camera.
    p.a.sip_in(
        now,
        SipInput::ReInviteAnswered(Err(ReInviteFailure::Refused("488".into()))),
    );
    let media = p.a.take_media();
    assert!(
        media.contains(&(1, MediaAction::Source { screen: false })),
        "{media:?}"
    );
    assert!(p.a.view().is_some_and(|v| !v.sharing_screen));
    assert!(p.a.events.iter().any(|e| matches!(
        e,
        Event::CommandFailed {
            command: "share screen",
            ..
        }
    )));
    // Shared (agreed), then a stop the peer refuses: still stopped.
    p.drive();
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: true })
        .expect("share");
    p.drive();
    assert!(p.a.view().is_some_and(|v| v.sharing_screen));
    let now = p.now;
    p.a.input(now, Input::ShareScreen { id, on: false })
        .expect("stop");
    let _ = p.a.take_media();
    p.a.sip_in(
        now,
        SipInput::ReInviteAnswered(Err(ReInviteFailure::Refused("488".into()))),
    );
    let media = p.a.take_media();
    assert!(
        !media.contains(&(1, MediaAction::Source { screen: true })),
        "{media:?}"
    );
    assert!(p.a.view().is_some_and(|v| !v.sharing_screen));
}

#[test]
fn a_share_taken_back_before_the_peer_answers_never_starts() {
    let mut p = secure_call(Conditions::latency(Duration::from_millis(20)), 31);
    p.b.video = true;
    let id = p.a.id();
    let now = p.now;
    let stream = PreparedStream {
        screen: true,
        ..p.a.added_video(0)
    };
    p.a.input(now, Input::AddVideo { id, stream })
        .expect("share in a voice call");
    // The bar shows from the moment it is asked for.
    assert!(p.a.view().is_some_and(|v| v.sharing_screen));
    assert!(last_reinvite(&p.a).1.contains("a=content:slides"));
    let _ = p.a.take_media();
    // Taken back before the peer answers: the bar goes at once.
    p.a.input(now, Input::RemoveVideo { id })
        .expect("take it back");
    assert!(p.a.view().is_some_and(|v| !v.sharing_screen));
    p.drive();
    // The peer agreed, but nothing starts: the stream is given back, and a re-INVITE
    // puts its line to port 0.
    assert!(starts(&p.a.take_media()).is_empty());
    assert_eq!(
        p.a.released.iter().map(|r| r.port).collect::<Vec<_>>(),
        [5000]
    );
    assert!(last_reinvite(&p.a).1.starts_with("m=video 0 "));
    assert_eq!(kinds(&p.a), [StreamKind::Audio]);
    assert_eq!(kinds(&p.b), [StreamKind::Audio]);
    assert!(p.a.view().is_some_and(|v| !v.sharing_screen));
}
