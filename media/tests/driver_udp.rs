//! Media threads over real UDP sockets on loopback: ZRTP-secured, a tone played on one
//! side recorded on the other, and echoed back (the echo-test peer); a stranger spraying
//! both media ports; a peer whose SDP names an address it does not send from.

use hush_media::analysis::{dominant_frequency, rms, tone};
use hush_media::audio::{SinkSpec, SourceSpec, read_recording};
use hush_media::codec::CodecKind;
use hush_media::driver::{MediaCall, MediaCommand, MediaReport, PreparedMedia};
use hush_media::rtp::{Kind, RtpHeader, classify, write};
use hush_media::stream::{Policy, StreamConfig, StreamEvent};
use hush_media::zrtp::{ZrtpConfig, ZrtpEvent, ZrtpSession};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

fn loopback() -> PreparedMedia {
    PreparedMedia::bind("127.0.0.1".parse().expect("ip")).expect("bind")
}

fn zrtp(ssrc: u32) -> ZrtpSession {
    ZrtpSession::new(&ZrtpConfig::default(), ssrc, Instant::now()).expect("zrtp")
}

fn config(ssrc: u32, remote: SocketAddr, peer_hello_hash: Option<String>) -> StreamConfig {
    StreamConfig {
        local_ssrc: ssrc,
        codec: CodecKind::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(101),
        policy: Policy::Mandatory,
        peer_hello_hash,
        remote,
    }
}

/// What a media thread reported so far, kept whole so nothing is missed while waiting.
struct Reports {
    rx: mpsc::Receiver<MediaReport>,
    seen: Vec<MediaReport>,
}

impl Reports {
    /// Waits (bounded) for a report matching `f`.
    fn wait_for(&mut self, what: &str, f: impl Fn(&MediaReport) -> bool) -> MediaReport {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(r) => {
                    self.seen.push(r.clone());
                    if f(&r) {
                        return r;
                    }
                }
                Err(_) => panic!("no {what} within 15 s: {:?}", self.seen.last()),
            }
        }
    }

    fn sas(&mut self) -> String {
        let sas = |r: &MediaReport| match r {
            MediaReport::Event(StreamEvent::Secure { sas, .. }) => Some(sas.clone()),
            _ => None,
        };
        sas(&self.wait_for("secure", |r| sas(r).is_some())).expect("sas")
    }

    fn received(&mut self, packets: u64) {
        self.wait_for(
            "audio",
            |r| matches!(r, MediaReport::Stats(s) if s.received_packets >= packets),
        );
    }

    /// Failed or cleartext events: a call that must stay secure has none.
    fn setbacks(&self) -> Vec<&StreamEvent> {
        self.seen
            .iter()
            .filter_map(|r| match r {
                MediaReport::Event(e @ (StreamEvent::Failed(_) | StreamEvent::Cleartext(_))) => {
                    Some(e)
                }
                _ => None,
            })
            .collect()
    }
}

fn start(
    media: PreparedMedia,
    cfg: StreamConfig,
    zrtp: ZrtpSession,
    source: SourceSpec,
    sink: SinkSpec,
) -> (MediaCall, Reports) {
    let (tx, rx) = mpsc::channel();
    let call = media
        .start(cfg, Some(zrtp), source, sink, move |r| {
            let _ = tx.send(r);
        })
        .expect("media thread");
    (
        call,
        Reports {
            rx,
            seen: Vec::new(),
        },
    )
}

/// The last second of a recording has `freq` at a useful level.
fn assert_hears(path: &Path, freq: f64, who: &str) {
    let (heard, rate) = read_recording(path).expect("recording");
    let tail = &heard[heard.len() - rate as usize..];
    assert_eq!(
        dominant_frequency(tail, rate),
        freq,
        "{who} hears {freq} Hz"
    );
    assert!(rms(tail) > 3000.0, "{who}: level {}", rms(tail));
}

#[test]
fn secure_tone_and_echo_over_loopback_udp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (loopback(), loopback());
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    let heard_by_b = dir.path().join("b.wav");
    let echoed = dir.path().join("a.wav");
    let (call_a, mut rx_a) = start(
        a,
        config(1, b_addr, None),
        zrtp(1),
        SourceSpec::Tone(440.0),
        SinkSpec::Wav(echoed.clone()),
    );
    let (call_b, mut rx_b) = start(
        b,
        config(2, a_addr, None),
        zrtp(2),
        SourceSpec::Echo,
        SinkSpec::Wav(heard_by_b.clone()),
    );
    assert_eq!(rx_a.sas(), rx_b.sas());
    // Two seconds of audio have crossed when a has received 100 echoed packets.
    rx_a.received(100);
    call_a.stop();
    call_b.stop();
    let final_a = rx_a.wait_for("final stats", |r| matches!(r, MediaReport::Ended(_)));
    if let MediaReport::Ended(s) = final_a {
        assert!(s.sent_packets >= 100 && s.refused_datagrams == 0, "{s:?}");
    }
    assert_hears(&heard_by_b, 440.0, "b");
    assert_hears(&echoed, 440.0, "a (the echo)");
}

/// Genuine ZRTP packets of another call (two engines in memory): (Hello, Commit).
fn foreign_zrtp() -> (Vec<u8>, Vec<u8>) {
    let mut now = Instant::now();
    let mut sides = [zrtp(0x7777), zrtp(0x8888)];
    let mut recorded: Vec<Vec<u8>> = Vec::new();
    let mut secure = 0;
    for s in &mut sides {
        s.start(now).expect("start");
    }
    for _ in 0..1000 {
        for i in 0..2 {
            while let Some(p) = sides[i].poll_transmit() {
                recorded.push(p.clone());
                let _ = sides[1 - i].handle_packet(now, &p);
            }
            while let Some(ev) = sides[i].poll_event() {
                if matches!(ev, ZrtpEvent::Secure(_)) {
                    secure += 1;
                }
            }
        }
        if secure == 2 {
            break;
        }
        now += Duration::from_millis(10);
        for s in &mut sides {
            s.handle_timeout(now);
        }
    }
    assert_eq!(secure, 2, "the other call went secure");
    let of_type = |t: &[u8; 8]| {
        recorded
            .iter()
            .find(|d| d.len() > 24 && &d[16..24] == t)
            .cloned()
            .expect("recorded")
    };
    (of_type(b"Hello   "), of_type(b"Commit  "))
}

#[test]
fn a_stranger_spraying_both_media_ports_neither_ends_nor_weakens_a_live_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (loopback(), loopback());
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    let (za, zb) = (zrtp(1), zrtp(2));
    let (hash_a, hash_b) = (za.hello_hash().expect("a"), zb.hello_hash().expect("b"));

    let (hello, commit) = foreign_zrtp();
    let mut junk_rtp = Vec::new();
    let h = RtpHeader {
        payload_type: 0,
        marker: false,
        sequence: 9,
        timestamp: 9,
        ssrc: 2,
    };
    write(&h, &[0xff; 160], &mut junk_rtp);
    let junk = [hello, commit, junk_rtp, vec![0x80, 201, 0, 1, 0, 0, 0, 2]];
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("stranger");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    // From before the call starts until it has run its course, 50 rounds a second.
    let sprayer = std::thread::spawn(move || {
        let mut rounds = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            for to in [a_addr, b_addr] {
                for d in &junk {
                    stranger.send_to(d, to).expect("spray");
                }
            }
            rounds += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        rounds * junk.len() as u64
    });

    let (heard_by_a, heard_by_b) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
    let (call_a, mut rx_a) = start(
        a,
        config(1, b_addr, Some(hash_b)),
        za,
        SourceSpec::Tone(440.0),
        SinkSpec::Wav(heard_by_a.clone()),
    );
    let (call_b, mut rx_b) = start(
        b,
        config(2, a_addr, Some(hash_a)),
        zb,
        SourceSpec::Tone(880.0),
        SinkSpec::Wav(heard_by_b.clone()),
    );
    assert_eq!(rx_a.sas(), rx_b.sas(), "secure with equal SAS");
    // Three seconds of audio each way.
    rx_a.received(150);
    rx_b.received(150);
    stop.store(true, Ordering::Relaxed);
    let sprayed = sprayer.join().expect("sprayer");
    assert!(sprayed > 100, "{sprayed}");
    for rx in [&mut rx_a, &mut rx_b] {
        rx.wait_for(
            "every sprayed datagram refused",
            |r| matches!(r, MediaReport::Stats(s) if s.refused_datagrams >= sprayed),
        );
    }
    call_a.stop();
    call_b.stop();
    for (rx, who) in [(&mut rx_a, "a"), (&mut rx_b, "b")] {
        rx.wait_for("final stats", |r| matches!(r, MediaReport::Ended(_)));
        assert!(rx.setbacks().is_empty(), "{who}: {:?}", rx.setbacks());
    }
    assert_hears(&heard_by_b, 440.0, "b");
    assert_hears(&heard_by_a, 880.0, "a");
}

#[test]
fn a_peer_whose_sdp_names_another_address_is_reached_after_its_signalled_hello() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (loopback(), loopback());
    let b_addr = b.local_addr();
    // A's SDP names an address it never sends from (its private one behind NAT). We
    // hold that port so that what B sends there can be inspected.
    let private = UdpSocket::bind("127.0.0.1:0").expect("private");
    private
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (za, zb) = (zrtp(1), zrtp(2));
    let (hash_a, hash_b) = (za.hello_hash().expect("a"), zb.hello_hash().expect("b"));
    let heard_by_a = dir.path().join("a.wav");
    let heard_by_b = dir.path().join("b.wav");
    let (call_b, mut rx_b) = start(
        b,
        config(2, private.local_addr().expect("addr"), Some(hash_a)),
        zb,
        SourceSpec::Tone(880.0),
        SinkSpec::Wav(heard_by_b.clone()),
    );
    // B starts first: its first Hello goes to the signalled address.
    let mut buf = [0u8; 2048];
    let (n, _) = private.recv_from(&mut buf).expect("B's first Hello");
    let mut at_private = vec![classify(&buf[..n])];
    let (call_a, mut rx_a) = start(
        a,
        config(1, b_addr, Some(hash_b)),
        za,
        SourceSpec::Tone(440.0),
        SinkSpec::Wav(heard_by_a.clone()),
    );
    assert_eq!(rx_a.sas(), rx_b.sas(), "secure with equal SAS");
    rx_a.received(100);
    rx_b.received(100);
    call_a.stop();
    call_b.stop();
    assert!(rx_a.setbacks().is_empty() && rx_b.setbacks().is_empty());
    assert_hears(&heard_by_b, 440.0, "b");
    assert_hears(&heard_by_a, 880.0, "a");
    // Until A's Hello proved its address, B sent its own Hellos to the signalled one; its
    // media went there only until A's first SRTP packet proved A's real address, and
    // only sealed (a cleartext PCMU frame is 12 + 160 bytes; SRTP adds its tag).
    private.set_nonblocking(true).expect("nonblocking");
    while let Ok((n, _)) = private.recv_from(&mut buf) {
        at_private.push(classify(&buf[..n]));
        assert!(
            classify(&buf[..n]) != Kind::Rtp || n > 12 + 160,
            "cleartext media went to the signalled address ({n} bytes)"
        );
    }
    let media_there = at_private.iter().filter(|k| **k == Kind::Rtp).count();
    assert!(
        media_there <= 25,
        "B kept sending media to the signalled address: {at_private:?}"
    );
}

#[test]
fn a_wav_file_shorter_than_one_frame_is_refused_before_the_media_thread_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("click.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).expect("create");
    for s in tone(440.0, 48000, 0, 3, 8000.0) {
        w.write_sample(s).expect("sample");
    }
    w.finalize().expect("finalize");
    let peer = loopback();
    let cfg = config(1, peer.local_addr(), None);
    let result = loopback().start(
        cfg,
        Some(zrtp(1)),
        SourceSpec::Wav(path),
        SinkSpec::Null,
        |_| {},
    );
    let err = result.err().expect("refused");
    assert!(
        err.to_string().contains("shorter than one 20 ms frame"),
        "{err}"
    );
}

#[test]
fn a_barrier_answers_once_earlier_commands_are_applied_and_never_hangs_after_the_end() {
    let (a, b) = (loopback(), loopback());
    let b_addr = b.local_addr();
    let (call, _reports) = start(
        a,
        config(1, b_addr, None),
        zrtp(1),
        SourceSpec::Silence,
        SinkSpec::Null,
    );
    call.command(MediaCommand::SasVerified(false));
    assert_eq!(
        call.barrier().recv_timeout(Duration::from_secs(5)),
        Ok(()),
        "answered by the running thread"
    );
    call.command(MediaCommand::Stop);
    assert_eq!(
        call.barrier().recv_timeout(Duration::from_secs(5)),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "a thread that has ended drops the barrier instead of leaving it unanswered"
    );
}
