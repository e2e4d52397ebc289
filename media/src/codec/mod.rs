//! Audio codecs: G.711 (PCMU, PCMA) and Opus, behind one encoder and one decoder type.
//! Frames are 20 ms of mono 16-bit samples at the codec's clock rate.

mod g711;

pub use g711::{alaw_decode, alaw_encode, ulaw_decode, ulaw_encode};

use crate::MediaError;

/// Milliseconds of audio per RTP packet.
pub const FRAME_MS: u32 = 20;
/// Largest encoded frame we produce or accept.
pub const MAX_PAYLOAD: usize = 1275;

/// The codecs Hushphone speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 μ-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
    /// Opus, 48 kHz (sent mono).
    Opus,
}

impl CodecKind {
    /// Samples per second of the codec (and of the RTP clock).
    pub fn clock_rate(self) -> u32 {
        match self {
            CodecKind::Pcmu | CodecKind::Pcma => 8000,
            CodecKind::Opus => 48000,
        }
    }

    /// Samples in one 20 ms frame.
    pub fn frame_samples(self) -> usize {
        (self.clock_rate() * FRAME_MS / 1000) as usize
    }

    /// The SDP encoding name.
    pub fn sdp_name(self) -> &'static str {
        match self {
            CodecKind::Pcmu => "PCMU",
            CodecKind::Pcma => "PCMA",
            CodecKind::Opus => "opus",
        }
    }

    /// The static payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            CodecKind::Pcmu => Some(0),
            CodecKind::Pcma => Some(8),
            CodecKind::Opus => None,
        }
    }
}

/// Turns 20 ms frames of samples into RTP payloads.
pub enum Encoder {
    /// μ-law.
    Pcmu,
    /// A-law.
    Pcma,
    /// Opus.
    Opus(Box<opus::Encoder>),
}

impl Encoder {
    /// An encoder for `kind`.
    pub fn new(kind: CodecKind) -> Result<Encoder, MediaError> {
        Ok(match kind {
            CodecKind::Pcmu => Encoder::Pcmu,
            CodecKind::Pcma => Encoder::Pcma,
            CodecKind::Opus => {
                let mut e =
                    opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip)
                        .map_err(|e| MediaError::InvalidInput(format!("opus encoder: {e}")))?;
                // In-band FEC lets the receiver recover single losses.
                let _ = e.set_inband_fec(true);
                let _ = e.set_packet_loss_perc(5);
                Encoder::Opus(Box::new(e))
            }
        })
    }

    /// Encodes one frame into `out` (cleared first).
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), MediaError> {
        out.clear();
        match self {
            Encoder::Pcmu => out.extend(pcm.iter().map(|&s| ulaw_encode(s))),
            Encoder::Pcma => out.extend(pcm.iter().map(|&s| alaw_encode(s))),
            Encoder::Opus(e) => {
                out.resize(MAX_PAYLOAD, 0);
                let n = e
                    .encode(pcm, out)
                    .map_err(|e| MediaError::InvalidInput(format!("opus encode: {e}")))?;
                out.truncate(n);
            }
        }
        Ok(())
    }
}

/// Turns RTP payloads back into samples, and conceals lost frames.
pub enum Decoder {
    /// G.711 with our concealment.
    G711 {
        /// μ-law or A-law byte decoder.
        law: fn(u8) -> i16,
        /// Loss concealment state.
        plc: Concealer,
    },
    /// Opus (has its own concealment).
    Opus(Box<opus::Decoder>),
}

impl Decoder {
    /// A decoder for `kind`.
    pub fn new(kind: CodecKind) -> Result<Decoder, MediaError> {
        Ok(match kind {
            CodecKind::Pcmu => Decoder::G711 {
                law: ulaw_decode,
                plc: Concealer::default(),
            },
            CodecKind::Pcma => Decoder::G711 {
                law: alaw_decode,
                plc: Concealer::default(),
            },
            CodecKind::Opus => Decoder::Opus(Box::new(
                opus::Decoder::new(48000, opus::Channels::Mono)
                    .map_err(|e| MediaError::InvalidInput(format!("opus decoder: {e}")))?,
            )),
        })
    }

    /// Decodes `payload` into `out` (one frame), or conceals a lost frame when `None`.
    /// Returns the number of samples written. A malformed payload is an error and
    /// leaves `out` silent.
    pub fn decode(&mut self, payload: Option<&[u8]>, out: &mut [i16]) -> Result<usize, MediaError> {
        match self {
            Decoder::G711 { law, plc } => match payload {
                Some(p) => {
                    let n = p.len().min(out.len());
                    for (o, &b) in out.iter_mut().zip(p) {
                        *o = law(b);
                    }
                    out[n..].fill(0);
                    plc.remember(&out[..n]);
                    Ok(n)
                }
                None => Ok(plc.conceal(out)),
            },
            Decoder::Opus(d) => {
                let r = match payload {
                    Some(p) if p.len() > MAX_PAYLOAD => {
                        out.fill(0);
                        return Err(MediaError::Malformed {
                            kind: "Opus",
                            reason: "payload too large",
                        });
                    }
                    Some(p) => d.decode(p, out, false),
                    None => d.decode(&[], out, false),
                };
                r.map_err(|_| {
                    out.fill(0);
                    MediaError::Malformed {
                        kind: "Opus",
                        reason: "undecodable payload",
                    }
                })
            }
        }
    }
}

/// Packet-loss concealment for codecs without their own: replay the last good frame,
/// fading by half per consecutive loss, then silence.
#[derive(Default)]
pub struct Concealer {
    last: Vec<i16>,
    losses: u32,
}

impl Concealer {
    fn remember(&mut self, frame: &[i16]) {
        self.last.clear();
        self.last.extend_from_slice(frame);
        self.losses = 0;
    }

    fn conceal(&mut self, out: &mut [i16]) -> usize {
        self.losses += 1;
        let shift = self.losses.min(15);
        if self.losses > 4 || self.last.is_empty() {
            out.fill(0);
        } else {
            for (o, &s) in out.iter_mut().zip(self.last.iter().cycle()) {
                *o = s >> shift;
            }
        }
        out.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                ((i as f64 * 2.0 * std::f64::consts::PI * 440.0 / f64::from(rate)).sin() * 8000.0)
                    as i16
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips_a_tone() {
        for kind in [CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus] {
            let mut enc = Encoder::new(kind).expect("encoder");
            let mut dec = Decoder::new(kind).expect("decoder");
            let n = kind.frame_samples();
            let mut energy_in = 0f64;
            let mut energy_out = 0f64;
            let mut payload = Vec::new();
            let mut out = vec![0i16; n];
            let input = tone(kind.clock_rate(), n * 20);
            for (i, frame) in input.chunks(n).enumerate() {
                enc.encode(frame, &mut payload).expect("encode");
                assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
                assert_eq!(dec.decode(Some(&payload), &mut out).expect("decode"), n);
                if i >= 5 {
                    energy_in += frame.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
                    energy_out += out.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
                }
            }
            let ratio = energy_out / energy_in;
            assert!(
                (0.7..1.3).contains(&ratio),
                "{kind:?}: energy ratio {ratio}"
            );
            // Concealment produces a frame and never panics.
            assert_eq!(dec.decode(None, &mut out).expect("conceal"), n);
        }
    }

    #[test]
    fn garbage_payloads_do_not_panic() {
        let mut dec = Decoder::new(CodecKind::Opus).expect("decoder");
        let mut out = vec![0i16; 960];
        for len in [0usize, 1, 2, 3, 100, 1275, 1276, 4000] {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
            let _ = dec.decode(Some(&junk), &mut out);
        }
    }
}
