//! Choosing a stream's codec from an offer, and reading what an answer chose.

use super::{Codec, Negotiated, StreamDescription, bad};
use crate::SignalingError;

/// Picks the codec for an answer: the offerer's most preferred one that we support.
pub fn negotiate(
    offer: &StreamDescription,
    supported: &[Codec],
) -> Result<Negotiated, SignalingError> {
    let (pt, codec) = offer
        .codecs
        .iter()
        .find(|(_, c)| supported.contains(c))
        .copied()
        .ok_or_else(|| {
            let ours: Vec<&str> = supported.iter().map(|c| c.sdp_name()).collect();
            bad(format!("no codec in common (we speak {})", ours.join(", ")))
        })?;
    let telephone_event = offer
        .telephone_events
        .iter()
        .find(|(_, r)| *r == codec.clock_rate())
        .map(|(pt, _)| *pt);
    Ok(Negotiated {
        codec,
        payload_type: pt,
        telephone_event,
    })
}

/// Reads what the answerer chose from its answer to our offer.
pub fn accepted(
    answer: &StreamDescription,
    offered: &[Codec],
) -> Result<Negotiated, SignalingError> {
    if answer.port == 0 {
        return Err(bad("the peer refused the stream"));
    }
    negotiate(answer, offered)
}
