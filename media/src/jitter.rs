//! An adaptive jitter buffer: orders packets, hides network jitter behind a playout
//! delay that follows the measured jitter, and reports lost frames so the decoder can
//! conceal them. Bounded in packets and bytes; buffers are recycled, so the steady
//! state does not allocate.

use std::collections::BTreeMap;

/// Packets held at most (a second of 20 ms frames).
const CAPACITY: usize = 50;
/// Largest payload accepted.
const MAX_PAYLOAD: usize = 1500;
/// A sequence jump larger than this is a new stream, not loss.
const RESET_JUMP: u64 = 3000;

/// What to play for the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Playout {
    /// A packet: its payload was copied into the caller's buffer.
    Frame,
    /// This frame's packet is missing: conceal it.
    Lost,
    /// Still filling the buffer (start or after an underrun): play silence.
    Buffering,
}

/// Counters for the statistics line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames concealed because their packet never came in time.
    pub lost: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets dropped to shrink the delay after a jitter spike.
    pub trimmed: u64,
    /// Times the buffer ran dry.
    pub underruns: u64,
    /// Current playout delay target in frames.
    pub target_frames: u32,
    /// Packets waiting.
    pub depth: u32,
}

/// The buffer for one incoming stream.
pub struct JitterBuffer {
    packets: BTreeMap<u64, Vec<u8>>,
    pool: Vec<Vec<u8>>,
    highest: Option<u64>,
    next: Option<u64>,
    playing: bool,
    /// Playout has begun: packets before `next` are late from now on.
    started: bool,
    frame_ms: u32,
    jitter_ms_q4: u32,
    last_transit: Option<i64>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for frames of `frame_ms` milliseconds.
    pub fn new(frame_ms: u32) -> JitterBuffer {
        JitterBuffer {
            packets: BTreeMap::new(),
            pool: Vec::with_capacity(CAPACITY + 1),
            highest: None,
            next: None,
            playing: false,
            started: false,
            frame_ms: frame_ms.max(1),
            jitter_ms_q4: 0,
            last_transit: None,
            stats: JitterStats {
                target_frames: 2,
                ..JitterStats::default()
            },
        }
    }

    fn extend(&self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            return u64::from(seq) + (1 << 32);
        };
        // Nearest extended value to `h` with these low 16 bits.
        let base = h & !0xffff;
        let candidates = [base.wrapping_sub(0x10000), base, base + 0x10000];
        candidates
            .into_iter()
            .map(|c| c | u64::from(seq))
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base | u64::from(seq))
    }

    /// Adds a received packet. `arrival_ms` and `media_ms` (RTP timestamp in ms) feed the
    /// jitter estimate.
    pub fn push(&mut self, seq: u16, arrival_ms: i64, media_ms: i64, payload: &[u8]) {
        if payload.len() > MAX_PAYLOAD {
            return;
        }
        let mut ext = self.extend(seq);
        if let Some(h) = self.highest
            && ext.abs_diff(h) > RESET_JUMP
        {
            self.reset();
            ext = self.extend(seq);
        }
        if self.started && self.next.is_some_and(|n| ext < n) {
            self.stats.late += 1;
            return;
        }
        if self.packets.contains_key(&ext) {
            return;
        }
        let transit = arrival_ms - media_ms;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs().min(10_000) as u32;
            self.jitter_ms_q4 = self.jitter_ms_q4 + d - (self.jitter_ms_q4 + 8) / 16;
        }
        self.last_transit = Some(transit);
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.packets.insert(ext, buf);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        if self.next.is_none_or(|n| ext < n) {
            self.next = Some(ext);
        }
        while self.packets.len() > CAPACITY {
            if let Some((k, v)) = self.packets.pop_first() {
                self.recycle(v);
                self.next = Some(k + 1);
            }
        }
        self.stats.target_frames = self.target();
    }

    fn reset(&mut self) {
        let old: Vec<Vec<u8>> = std::mem::take(&mut self.packets).into_values().collect();
        for v in old {
            self.recycle(v);
        }
        self.highest = None;
        self.next = None;
        self.playing = false;
        self.started = false;
        self.last_transit = None;
    }

    fn recycle(&mut self, v: Vec<u8>) {
        if self.pool.len() < CAPACITY + 1 {
            self.pool.push(v);
        }
    }

    /// Playout delay in frames: about three times the jitter, between 2 and 10 frames.
    fn target(&self) -> u32 {
        let jitter_ms = self.jitter_ms_q4 / 16;
        (3 * jitter_ms + self.frame_ms / 2)
            .div_ceil(self.frame_ms)
            .clamp(2, 10)
    }

    fn depth(&self) -> u64 {
        match (self.next, self.highest) {
            (Some(n), Some(h)) if h >= n => h - n + 1,
            _ => 0,
        }
    }

    /// Takes the next frame, once per frame interval. On [`Playout::Frame`] the payload is
    /// in `out`.
    pub fn pop(&mut self, out: &mut Vec<u8>) -> Playout {
        out.clear();
        let target = u64::from(self.target());
        self.stats.depth = self.packets.len() as u32;
        if !self.playing {
            if self.packets.is_empty() || self.depth() < target {
                return Playout::Buffering;
            }
            self.playing = true;
            self.started = true;
        }
        let Some(mut next) = self.next else {
            self.playing = false;
            return Playout::Buffering;
        };
        // After a spike the buffer may hold far more than needed: drop one packet per
        // frame until the delay is back near the target.
        if self.depth() > target + 3
            && let Some(v) = self.packets.remove(&next)
        {
            self.recycle(v);
            self.stats.trimmed += 1;
            next += 1;
        }
        if let Some(v) = self.packets.remove(&next) {
            out.extend_from_slice(&v);
            self.recycle(v);
            self.next = Some(next + 1);
            return Playout::Frame;
        }
        if self.packets.is_empty() {
            // Ran dry: conceal this frame and rebuild the delay.
            self.stats.underruns += 1;
            self.playing = false;
            self.next = Some(next + 1);
            self.stats.lost += 1;
            return Playout::Lost;
        }
        self.next = Some(next + 1);
        self.stats.lost += 1;
        Playout::Lost
    }

    /// Current counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Estimated network jitter in milliseconds.
    pub fn jitter_ms(&self) -> u32 {
        self.jitter_ms_q4 / 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(jb: &mut JitterBuffer, n: usize) -> Vec<Playout> {
        let mut out = Vec::new();
        (0..n).map(|_| jb.pop(&mut out)).collect()
    }

    #[test]
    fn reorders_and_conceals() {
        let mut jb = JitterBuffer::new(20);
        for (seq, t) in [(1u16, 0i64), (0, 5), (3, 10), (4, 12)] {
            jb.push(seq, t, i64::from(seq) * 20, &[seq as u8]);
        }
        let mut out = Vec::new();
        assert_eq!(jb.pop(&mut out), Playout::Frame);
        assert_eq!(out, [0]);
        assert_eq!(jb.pop(&mut out), Playout::Frame);
        assert_eq!(out, [1]);
        assert_eq!(jb.pop(&mut out), Playout::Lost, "seq 2 never came");
        assert_eq!(jb.pop(&mut out), Playout::Frame);
        assert_eq!(out, [3]);
        // Seq 2 now is late and dropped.
        jb.push(2, 100, 40, &[2]);
        assert_eq!(jb.stats().late, 1);
        assert_eq!(jb.stats().lost, 1);
    }

    #[test]
    fn wraps_sequence_numbers_in_steady_flow() {
        let mut jb = JitterBuffer::new(20);
        let mut out = Vec::new();
        let mut got = Vec::new();
        for i in 0..10u16 {
            let seq = 65530u16.wrapping_add(i);
            jb.push(seq, i64::from(i) * 20, i64::from(i) * 20, &[i as u8]);
            got.push((jb.pop(&mut out), out.first().copied()));
        }
        assert_eq!(got[0].0, Playout::Buffering, "fills to the target first");
        let played: Vec<u8> = got
            .iter()
            .filter(|(p, _)| *p == Playout::Frame)
            .filter_map(|(_, b)| *b)
            .collect();
        assert_eq!(played, (0..9).collect::<Vec<u8>>(), "{got:?}");
    }

    #[test]
    fn adapts_target_to_jitter_and_trims_after_spikes() {
        let mut jb = JitterBuffer::new(20);
        // Heavy jitter: arrival wobbles by +-40 ms.
        for i in 0..100i64 {
            let wobble = if i % 2 == 0 { 40 } else { -40 };
            jb.push(i as u16, i * 20 + wobble, i * 20, &[1]);
        }
        assert!(
            jb.stats().target_frames >= 5,
            "target follows jitter: {:?}",
            jb.stats()
        );
        // 50 packets queued (capacity): playout trims toward the target.
        let _ = play(&mut jb, 30);
        assert!(jb.stats().trimmed > 0);
        let mut calm = JitterBuffer::new(20);
        for i in 0..100i64 {
            calm.push(i as u16, i * 20, i * 20, &[1]);
        }
        assert_eq!(calm.stats().target_frames, 2);
    }

    #[test]
    fn hostile_input_is_bounded() {
        let mut jb = JitterBuffer::new(20);
        for i in 0..10_000u32 {
            jb.push((i * 7919) as u16, i64::from(i), 0, &[0u8; 100]);
        }
        assert!(jb.packets.len() <= CAPACITY);
        jb.push(1, 0, 0, &vec![0u8; MAX_PAYLOAD + 1]);
        let mut out = Vec::new();
        for _ in 0..100 {
            jb.pop(&mut out);
        }
    }
}
