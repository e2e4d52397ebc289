//! Puts VP8 frames back together from RTP packets (sans-IO). A frame is complete when
//! its packets run without a gap from the one marked "start" to the one carrying the
//! marker bit, all with one timestamp. Frames come out in order; a gap is waited for
//! briefly (packets overtake each other), then the frame is given up. After a loss,
//! inter frames are held back (they would decode into a smeared picture) until a key
//! frame comes, and a key frame is asked for, again if it does not come.

use super::payload::Vp8Descriptor;
use crate::MediaError;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a gap at the head is waited for before its frame is given up.
pub const GAP_WAIT: Duration = Duration::from_millis(100);
/// How long after asking for a key frame we ask again.
pub const KEY_RETRY: Duration = Duration::from_millis(500);
/// Most packets held waiting (a 4K key frame of [`MAX_BYTES`] fits).
const MAX_PACKETS: usize = 4096;
/// Most bytes held waiting (a 4K key frame is well under this).
const MAX_BYTES: usize = 4 << 20;
/// Most complete frames not yet taken.
const MAX_READY: usize = 8;
/// A jump of sequence numbers beyond this is a new start, not a loss.
const MAX_JUMP: u64 = 3000;

/// A frame put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// The VP8 bitstream.
    pub data: Vec<u8>,
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// A key frame.
    pub key: bool,
    /// Its PictureID, if the sender sent one.
    pub picture_id: Option<u16>,
}

/// Counters for the stream's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Frames put back together and handed on.
    pub frames: u64,
    /// Frames given up (a packet never came) or held back after a loss.
    pub lost: u64,
    /// Key frames asked for.
    pub key_requests: u64,
    /// Packets refused (bad descriptor, duplicate, too late, no room).
    pub refused: u64,
}

struct Part {
    timestamp: u32,
    marker: bool,
    /// Starts partition 0: the frame's first packet.
    first: bool,
    picture_id: Option<u16>,
    data: Vec<u8>,
}

/// The assembler of one video stream.
pub struct FrameAssembler {
    parts: BTreeMap<u64, Part>,
    bytes: usize,
    /// Highest extended sequence number seen.
    highest: Option<u64>,
    /// Where the next frame must start (after the last one handed on or given up).
    next: Option<u64>,
    /// Since when the head has been waiting for a missing packet.
    blocked_since: Option<Instant>,
    ready: VecDeque<Assembled>,
    /// No key frame since the start or the last loss: inter frames are held back.
    broken: bool,
    want_key: bool,
    key_asked_at: Option<Instant>,
    stats: AssemblerStats,
}

impl Default for FrameAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAssembler {
    /// An assembler waiting for its first key frame.
    pub fn new() -> FrameAssembler {
        FrameAssembler {
            parts: BTreeMap::new(),
            bytes: 0,
            highest: None,
            next: None,
            blocked_since: None,
            ready: VecDeque::new(),
            broken: true,
            want_key: false,
            key_asked_at: None,
            stats: AssemblerStats::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    fn extend(&self, seq: u16) -> u64 {
        let seq = u64::from(seq);
        match self.highest {
            None => (1 << 16) + seq,
            Some(h) => {
                let base = h & !0xffff;
                [
                    base.saturating_sub(1 << 16) + seq,
                    base + seq,
                    base + (1 << 16) + seq,
                ]
                .into_iter()
                .min_by_key(|c| c.abs_diff(h))
                .unwrap_or(base + seq)
            }
        }
    }

    /// One RTP packet of the stream (its payload, descriptor included).
    pub fn push(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), MediaError> {
        let d = Vp8Descriptor::parse(payload).inspect_err(|_| self.stats.refused += 1)?;
        let mut ext = self.extend(seq);
        let jumped_ahead = self.highest.is_some_and(|h| ext > h + MAX_JUMP);
        let jumped_back = self.next.is_some_and(|n| ext + MAX_JUMP < n);
        if jumped_ahead || jumped_back {
            // The sender started over: nothing held belongs with what comes now.
            self.restart();
            ext = self.extend(seq);
        }
        if self.next.is_some_and(|n| ext < n) || self.parts.contains_key(&ext) {
            self.stats.refused += 1;
            return Ok(());
        }
        let data = &payload[d.len..];
        if self.parts.len() >= MAX_PACKETS || self.bytes + data.len() > MAX_BYTES {
            self.stats.refused += 1;
            self.restart();
        }
        self.bytes += data.len();
        self.parts.insert(
            ext,
            Part {
                timestamp,
                marker,
                first: d.start && d.partition == 0,
                picture_id: d.picture_id,
                data: data.to_vec(),
            },
        );
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.collect(now);
        Ok(())
    }

    /// Drops everything held and waits for a key frame.
    fn restart(&mut self) {
        self.stats.lost += u64::from(!self.parts.is_empty());
        self.parts.clear();
        self.bytes = 0;
        self.next = None;
        self.highest = None;
        self.blocked_since = None;
        self.lose();
    }

    fn lose(&mut self) {
        self.broken = true;
        self.want_key = true;
    }

    /// The end of the complete frame starting at `start`, if it is complete.
    fn complete_from(&self, start: u64) -> Option<u64> {
        let ts = self.parts.get(&start)?.timestamp;
        let mut seq = start;
        loop {
            let p = self.parts.get(&seq)?;
            if p.timestamp != ts {
                return None;
            }
            if p.marker {
                return Some(seq);
            }
            seq += 1;
        }
    }

    fn take(&mut self, until: u64) -> Vec<Part> {
        let rest = self.parts.split_off(&(until + 1));
        let taken = std::mem::replace(&mut self.parts, rest);
        let parts: Vec<Part> = taken.into_values().collect();
        self.bytes -= parts.iter().map(|p| p.data.len()).sum::<usize>();
        parts
    }

    fn collect(&mut self, now: Instant) {
        while let Some((&head, part)) = self.parts.first_key_value() {
            let (first, ts) = (part.first, part.timestamp);
            let in_place = self.next.is_none_or(|n| n == head);
            if in_place
                && first
                && let Some(end) = self.complete_from(head)
            {
                let parts = self.take(end);
                self.next = Some(end + 1);
                self.blocked_since = None;
                self.hand_on(parts);
                continue;
            }
            // A frame still arriving (everything since its start is here; a large key
            // frame on a slow link takes a while) is waited for as long as it takes;
            // only a gap starts the clock.
            let highest = self.highest.unwrap_or(head);
            let hole = (highest - head + 1) as usize != self.parts.len();
            if in_place && first && !hole {
                self.blocked_since = None;
                return;
            }
            let since = *self.blocked_since.get_or_insert(now);
            if now < since + GAP_WAIT {
                return;
            }
            // Waited long enough: what is missing is lost.
            self.blocked_since = None;
            self.stats.lost += 1;
            self.lose();
            if !in_place && first {
                // Only packets before this frame went missing: it may still complete.
                self.next = Some(head);
                continue;
            }
            // This frame lacks its start or a packet inside: give it up, up to the
            // next frame's first packet.
            let until = self
                .parts
                .iter()
                .skip(1)
                .find(|(_, p)| p.first && p.timestamp != ts)
                .map(|(s, _)| *s - 1)
                .or_else(|| {
                    self.parts
                        .iter()
                        .take_while(|(_, p)| p.timestamp == ts)
                        .last()
                        .map(|(s, _)| *s)
                })
                .unwrap_or(head);
            self.take(until);
            self.next = Some(until + 1);
        }
    }

    fn hand_on(&mut self, parts: Vec<Part>) {
        let (timestamp, picture_id) = (parts[0].timestamp, parts[0].picture_id);
        let data: Vec<u8> = parts.into_iter().flat_map(|p| p.data).collect();
        // RFC 6386 §9.1: bit 0 of the frame tag is clear on a key frame.
        let key = data.first().is_some_and(|b| b & 1 == 0);
        if key {
            self.broken = false;
            self.want_key = false;
            self.key_asked_at = None;
        } else if self.broken {
            self.stats.lost += 1;
            self.want_key = true;
            return;
        }
        if self.ready.len() >= MAX_READY {
            // Not taken in time: this frame is lost, and the ones after it would
            // decode wrongly without it.
            self.stats.lost += 1;
            self.lose();
            return;
        }
        self.stats.frames += 1;
        self.ready.push_back(Assembled {
            data,
            timestamp,
            key,
            picture_id,
        });
    }

    /// The next complete frame, in order.
    pub fn poll_frame(&mut self) -> Option<Assembled> {
        self.ready.pop_front()
    }

    /// Whether to ask the sender for a key frame now (PLI); counts the request.
    pub fn poll_key_request(&mut self, now: Instant) -> bool {
        let due = self.want_key && self.key_asked_at.is_none_or(|t| now >= t + KEY_RETRY);
        if due {
            self.key_asked_at = Some(now);
            self.stats.key_requests += 1;
        }
        due
    }

    /// The decoder could not use a frame: ask for a key frame.
    pub fn decode_failed(&mut self) {
        self.lose();
    }

    /// When [`Self::handle_timeout`] is next due: a gap to give up, or a key frame to
    /// ask for again. (A first request is due at once: call
    /// [`Self::poll_key_request`] after every push and timeout.)
    pub fn poll_timeout(&self) -> Option<Instant> {
        let gap = self.blocked_since.map(|t| t + GAP_WAIT);
        let key = self
            .key_asked_at
            .filter(|_| self.want_key)
            .map(|t| t + KEY_RETRY);
        gap.into_iter().chain(key).min()
    }

    /// Time passed: a gap waited for long enough is given up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.collect(now);
    }
}

#[cfg(test)]
mod tests;
