//! Two media threads over real UDP sockets on loopback: ZRTP-secured, a tone played on
//! one side recorded on the other, and echoed back (the echo-test peer).

use hush_media::analysis::{dominant_frequency, rms};
use hush_media::audio::{SinkSpec, SourceSpec, read_recording};
use hush_media::codec::CodecKind;
use hush_media::driver::{MediaCall, MediaReport, PreparedMedia};
use hush_media::stream::{Policy, StreamConfig, StreamEvent};
use hush_media::zrtp::{ZrtpConfig, ZrtpSession};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn start(
    media: PreparedMedia,
    ssrc: u32,
    remote: std::net::SocketAddr,
    source: SourceSpec,
    sink: SinkSpec,
) -> (MediaCall, mpsc::Receiver<MediaReport>) {
    let cfg = StreamConfig {
        local_ssrc: ssrc,
        codec: CodecKind::Pcmu,
        payload_type: 0,
        telephone_event_pt: Some(101),
        policy: Policy::Mandatory,
        peer_hello_hash: None,
    };
    let zrtp = ZrtpSession::new(&ZrtpConfig::default(), ssrc, Instant::now()).expect("zrtp");
    let (tx, rx) = mpsc::channel();
    let call = media
        .start(cfg, Some(zrtp), Some(remote), source, sink, move |r| {
            let _ = tx.send(r);
        })
        .expect("media thread");
    (call, rx)
}

/// Waits (bounded) for a report matching `f`.
fn wait_for(
    rx: &mpsc::Receiver<MediaReport>,
    what: &str,
    f: impl Fn(&MediaReport) -> bool,
) -> MediaReport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(r) if f(&r) => return r,
            Ok(_) => {}
            Err(_) => panic!("no {what} within 10 s"),
        }
    }
}

#[test]
fn secure_tone_and_echo_over_loopback_udp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = PreparedMedia::bind("127.0.0.1".parse().expect("ip")).expect("bind a");
    let b = PreparedMedia::bind("127.0.0.1".parse().expect("ip")).expect("bind b");
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    let heard_by_b = dir.path().join("b.wav");
    let echoed = dir.path().join("a.wav");
    let (call_a, rx_a) = start(
        a,
        1,
        b_addr,
        SourceSpec::Tone(440.0),
        SinkSpec::Wav(echoed.clone()),
    );
    let (call_b, rx_b) = start(
        b,
        2,
        a_addr,
        SourceSpec::Echo,
        SinkSpec::Wav(heard_by_b.clone()),
    );

    let sas = |r: &MediaReport| match r {
        MediaReport::Event(StreamEvent::Secure { sas, .. }) => Some(sas.clone()),
        _ => None,
    };
    let sas_a = sas(&wait_for(&rx_a, "secure on a", |r| sas(r).is_some()));
    let sas_b = sas(&wait_for(&rx_b, "secure on b", |r| sas(r).is_some()));
    assert_eq!(sas_a, sas_b);
    // Two seconds of audio have crossed when a has received 100 echoed packets.
    wait_for(
        &rx_a,
        "echoed audio",
        |r| matches!(r, MediaReport::Stats(s) if s.received_packets >= 100),
    );
    call_a.stop();
    call_b.stop();
    let final_a = wait_for(&rx_a, "final stats", |r| matches!(r, MediaReport::Ended(_)));
    if let MediaReport::Ended(s) = final_a {
        assert!(s.sent_packets >= 100 && s.refused_datagrams == 0, "{s:?}");
    }

    let (b_heard, rate) = read_recording(&heard_by_b).expect("b's recording");
    let tail = &b_heard[b_heard.len() - rate as usize..];
    assert_eq!(dominant_frequency(tail, rate), 440.0, "b hears the tone");
    assert!(rms(tail) > 3000.0, "at a useful level: {}", rms(tail));
    let (a_heard, rate) = read_recording(&echoed).expect("a's recording");
    let tail = &a_heard[a_heard.len() - rate as usize..];
    assert_eq!(dominant_frequency(tail, rate), 440.0, "the echo comes back");
}
