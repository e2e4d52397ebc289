use super::*;

/// What linphonec 5.1 (Debian 12) actually offers, captured from the wire.
const LINPHONE_OFFER: &str = include_str!("../../tests/fixtures/linphonec-5.1-offer.sdp");

#[test]
fn parses_a_linphone_offer() {
    let d = parse(LINPHONE_OFFER.as_bytes()).expect("parse");
    assert_eq!(d.addr, "127.0.0.1".parse::<IpAddr>().expect("ip"));
    assert_eq!(d.port, 7080);
    assert_eq!(d.codecs, vec![(0, Codec::Pcmu)]);
    assert_eq!(d.telephone_events, vec![(96, 8000)]);
    assert_eq!(d.direction, Direction::SendRecv);
    assert!(
        d.zrtp_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("1.10 416309f3"))
    );
    let n = negotiate(&d, &[Codec::Opus, Codec::Pcmu, Codec::Pcma]).expect("negotiate");
    assert_eq!(
        n,
        Negotiated {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(96)
        }
    );
}

#[test]
fn our_offer_and_answer_round_trip() {
    let all = [Codec::Opus, Codec::Pcmu, Codec::Pcma];
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let local = |port, zrtp: Option<&str>| LocalMedia {
        session_id: 1,
        version: 1,
        addr: ip,
        port,
        direction: Direction::SendRecv,
        zrtp_hash: zrtp.map(str::to_owned),
    };
    let hash = format!("1.10 {}", "0123456789abcdef".repeat(4));
    let offer = write(&local(4000, Some(&hash)), Codecs::Offer(&all));
    let d = parse(offer.as_bytes()).expect("our offer parses");
    assert_eq!(
        d.codecs,
        vec![(111, Codec::Opus), (0, Codec::Pcmu), (8, Codec::Pcma)]
    );
    assert_eq!(d.telephone_events, vec![(100, 48000), (101, 8000)]);
    assert_eq!(d.zrtp_hash.as_deref(), Some(hash.as_str()));
    // A G.711-only answerer picks PCMU and the 8 kHz telephone-event.
    let n = negotiate(&d, &[Codec::Pcmu]).expect("negotiate");
    assert_eq!(n.telephone_event, Some(101));
    let answer = write(&local(5000, None), Codecs::Answer(&n));
    let a = parse(answer.as_bytes()).expect("answer parses");
    assert_eq!(accepted(&a, &all).expect("accepted"), n);
}

#[test]
fn hold_and_refusal() {
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let local = LocalMedia {
        session_id: 1,
        version: 2,
        addr: ip,
        port: 4000,
        direction: Direction::SendOnly,
        zrtp_hash: None,
    };
    let hold = write(&local, Codecs::Offer(&[Codec::Pcmu]));
    assert_eq!(
        parse(hold.as_bytes()).expect("parse").direction,
        Direction::SendOnly
    );
    let old_hold = LINPHONE_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
    assert_eq!(
        parse(old_hold.as_bytes()).expect("parse").direction,
        Direction::SendOnly
    );
    let refused = LINPHONE_OFFER.replace("m=audio 7080", "m=audio 0");
    assert!(accepted(&parse(refused.as_bytes()).expect("parse"), &[Codec::Pcmu]).is_err());
    let video_only = "v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 9 RTP/AVP 96\r\n";
    assert!(parse(video_only.as_bytes()).is_err());
    let g729 = LINPHONE_OFFER.replace("RTP/AVP 0 96", "RTP/AVP 18 96");
    assert!(negotiate(&parse(g729.as_bytes()).expect("parse"), &[Codec::Pcmu]).is_err());
}

#[test]
fn hostile_bodies_are_errors() {
    for body in [
        &b""[..],
        b"garbage",
        b"v=0\r\n",
        b"\xff\xfe",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 99999999 RTP/AVP 0\r\n",
        b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 not-an-ip\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\n",
    ] {
        assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
    }
    assert!(parse(&vec![b'a'; MAX_SDP + 1]).is_err());
}

#[test]
fn a_malformed_zrtp_hash_refuses_the_body() {
    let good = parse(LINPHONE_OFFER.as_bytes())
        .expect("parse")
        .zrtp_hash
        .expect("linphonec sends a hash");
    assert!(is_zrtp_hash(&good), "{good}");
    let hex = "0123456789abcdef".repeat(4);
    for bad in [
        format!("1.10 {}", "zz".repeat(32)),
        format!("1.10 {}", &hex[..63]),
        format!("1.10 {hex}0"),
        hex.clone(),
        format!("x.10 {hex}"),
        format!("1.10  {hex}"),
        format!("1.10 {hex} extra"),
        format!("11111.1 {hex}"),
    ] {
        assert!(!is_zrtp_hash(&bad), "{bad}");
        let body = LINPHONE_OFFER.replace(&good, &bad);
        let err = parse(body.as_bytes()).expect_err(&bad);
        assert!(
            err.to_string().contains("a=zrtp-hash is malformed"),
            "{err}"
        );
    }
}

/// A linphonec-style offer of audio and VP8 video with a ZRTP hash per stream.
const AUDIO_VIDEO: &str = "v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 7078 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
a=zrtp-hash:1.10 1111111111111111111111111111111111111111111111111111111111111111\r\n\
m=video 9078 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=sendonly\r\n\
a=zrtp-hash:1.10 2222222222222222222222222222222222222222222222222222222222222222\r\n\
m=text 9 RTP/AVP 98\r\n";

#[test]
fn every_m_line_is_read_with_its_own_zrtp_hash() {
    let s = parse_session(AUDIO_VIDEO.as_bytes()).expect("parse");
    assert_eq!(s.streams.len(), 3);
    let (a, v, t) = (&s.streams[0], &s.streams[1], &s.streams[2]);
    assert_eq!(a.kind, Some(MediaKind::Audio));
    assert_eq!(a.codecs, vec![(0, Codec::Pcmu)]);
    assert!(a.zrtp_hash.as_deref().is_some_and(|h| h.ends_with("1111")));
    assert_eq!(v.kind, Some(MediaKind::Video));
    assert_eq!((v.port, v.direction), (9078, Direction::SendOnly));
    assert_eq!(v.codecs, vec![(96, Codec::Vp8)]);
    assert!(v.zrtp_hash.as_deref().is_some_and(|h| h.ends_with("2222")));
    assert_eq!(a.direction, Direction::SendRecv, "direction is per stream");
    assert_eq!(t.kind, None);
    assert!(!t.is_ours());
    assert_eq!(s.audio().map(|a| a.port), Some(7078));
}

#[test]
fn an_answer_keeps_the_offers_m_lines_and_refuses_what_we_do_not_carry() {
    let offer = parse_session(AUDIO_VIDEO.as_bytes()).expect("parse");
    let neg = negotiate(&offer.streams[0], &[Codec::Opus, Codec::Pcmu]).expect("audio");
    let video = negotiate(&offer.streams[1], &[Codec::Vp8]).expect("video");
    let refuse = |s: &StreamDescription| LocalStream {
        port: 0,
        direction: Direction::Inactive,
        zrtp_hash: None,
        content: None,
        codecs: StreamCodecs::Refused {
            media: s.media.clone(),
            proto: s.proto.clone(),
            formats: s.formats.clone(),
        },
        rtcp: LocalRtcp::default(),
    };
    let hash = |d: char| format!("1.10 {}", d.to_string().repeat(64));
    let body = write_session(
        7,
        2,
        "10.0.0.2".parse().expect("ip"),
        &[
            LocalStream {
                port: 4000,
                direction: Direction::SendRecv,
                zrtp_hash: Some(hash('a')),
                content: None,
                codecs: StreamCodecs::Answer(neg),
                rtcp: LocalRtcp::default(),
            },
            LocalStream {
                port: 4002,
                direction: Direction::RecvOnly,
                zrtp_hash: Some(hash('b')),
                content: Some("slides".into()),
                codecs: StreamCodecs::Answer(video),
                rtcp: LocalRtcp {
                    mux: false,
                    port: Some(4003),
                },
            },
            refuse(&offer.streams[2]),
        ],
    );
    let back = parse_session(body.as_bytes()).expect("our answer parses");
    assert_eq!(back.streams.len(), 3, "{body}");
    assert_eq!(back.streams[0].zrtp_hash, Some(hash('a')));
    assert_eq!(back.streams[1].zrtp_hash, Some(hash('b')));
    assert_eq!(back.streams[1].direction, Direction::RecvOnly);
    assert_eq!(back.streams[1].content.as_deref(), Some("slides"));
    assert_eq!(
        accepted(&back.streams[1], &[Codec::Vp8]).expect("accepted"),
        video
    );
    assert_eq!(
        (back.streams[2].port, back.streams[2].media.as_str()),
        (0, "text")
    );
    assert!(body.contains("m=text 0 RTP/AVP 98\r\n"), "{body}");
}

#[test]
fn too_many_m_lines_are_refused() {
    let mut body =
        String::from("v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n");
    for i in 0..=MAX_STREAMS {
        body.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 4000 + 2 * i));
    }
    assert!(parse_session(body.as_bytes()).is_err());
}

#[test]
fn a_secure_profile_is_not_ours() {
    let savp = AUDIO_VIDEO.replace("m=audio 7078 RTP/AVP", "m=audio 7078 RTP/SAVP");
    let s = parse_session(savp.as_bytes()).expect("parse");
    assert!(!s.streams[0].is_ours());
    assert!(s.streams[1].is_ours());
}

#[test]
fn a_content_attribute_that_is_not_a_token_is_dropped_not_echoed() {
    let hostile = AUDIO_VIDEO.replace(
        "a=sendonly\r\n",
        "a=sendonly\r\na=content:slides\ra=zrtp-hash:1.10 evil\r\n",
    );
    let s = parse_session(hostile.as_bytes()).expect("parse");
    assert_eq!(s.streams[1].content, None);
    let slides = AUDIO_VIDEO.replace("a=sendonly\r\n", "a=sendonly\r\na=content:Slides\r\n");
    let s = parse_session(slides.as_bytes()).expect("parse");
    assert_eq!(s.streams[1].content.as_deref(), Some("slides"));
}

#[test]
fn rtcp_goes_where_each_m_line_says() {
    let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n\
        m=video 6000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp:7000 IN IP4 10.0.0.9\r\n\
        m=video 8000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp:8001\r\na=rtcp-mux\r\n\
        m=video 9000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=rtcp:0\r\n";
    let s = parse_session(body.as_bytes()).expect("parses").streams;
    let at = |i: usize| s[i].rtcp_destination().to_string();
    assert_eq!(at(0), "10.0.0.1:5001", "the next port up");
    assert_eq!(
        at(1),
        "10.0.0.1:7000",
        "a=rtcp's port, never another address"
    );
    assert_eq!(at(2), "10.0.0.1:8000", "rtcp-mux wins");
    assert_eq!(at(3), "10.0.0.1:9001", "a port of 0 is ignored");
    // Our video m-line asks for key frames and says where our RTCP is.
    let neg = negotiate(&s[0], &[Codec::Vp8]).expect("vp8");
    let ours = write_session(
        1,
        1,
        "10.0.0.2".parse().expect("ip"),
        &[LocalStream {
            port: 4002,
            direction: Direction::SendRecv,
            zrtp_hash: None,
            content: None,
            codecs: StreamCodecs::Answer(neg),
            rtcp: LocalRtcp {
                mux: true,
                port: Some(4003),
            },
        }],
    );
    for line in [
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp:4003",
        "a=rtcp-mux",
    ] {
        assert!(ours.contains(line), "{line} in {ours}");
    }
    let back = parse_session(ours.as_bytes()).expect("parses").streams;
    assert!(back[0].rtcp_mux);
    assert_eq!(back[0].rtcp, Some((4003, None)));
}
