//! Any bytes as an incoming stanza into an online account's chat core (roster, presence,
//! rooms, IQ handling, the outbox). Must never panic; every IQ get/set gets one answer.
#![no_main]

use hush_signaling::xmpp::chat::ChatCore;
use libfuzzer_sys::fuzz_target;
use tokio_xmpp::Stanza;
use tokio_xmpp::parsers::iq::Iq;

fuzz_target!(|data: &[u8]| {
    let Ok(stanza) = xso::from_bytes::<Stanza>(data) else {
        return;
    };
    let expects_answer = matches!(stanza, Stanza::Iq(Iq::Get { .. } | Iq::Set { .. }));
    let mut core = ChatCore::new("me@example.org".parse().expect("jid"), "fz".into());
    core.online(false);
    let _ = core.send_message("peer@example.org".parse().expect("jid"), "hi".into(), None);
    core.join_room(
        "room@conference.example.org".parse().expect("jid"),
        "me".into(),
        None,
    );
    while core.poll_outbound().is_some() {}
    core.handle(stanza);
    let mut answers = 0;
    while let Some(o) = core.poll_outbound() {
        if matches!(o.stanza, Stanza::Iq(Iq::Result { .. } | Iq::Error { .. })) {
            answers += 1;
        }
    }
    while core.poll_event().is_some() {}
    if expects_answer {
        assert_eq!(answers, 1, "every IQ get/set gets exactly one answer");
    }
});
