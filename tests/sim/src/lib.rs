//! Simulated time and links for the sans-IO machines' tests, in the style of
//! quinn-proto's test `Pair` and str0m's `tests/common.rs`: two endpoints exchange
//! messages over [`Link`]s that delay, lose, reorder and duplicate them from a seed, and
//! a [`Pair`] steps both with a simulated clock, jumping to the next thing due. A run is
//! a function of its seed: a failure replays exactly.

use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A small seeded generator (splitmix64): spread, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && (self.next_u64() % 1000) < u64::from(per_mille)
    }

    /// A duration in `0..=max`.
    pub fn upto(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % (nanos + 1))
    }
}

/// How a link treats what crosses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Every message takes at least this long.
    pub latency: Duration,
    /// Plus up to this much more, at random: messages overtake each other.
    pub jitter: Duration,
    /// Messages lost, per thousand.
    pub loss_per_mille: u32,
    /// Messages delivered twice, per thousand (the copy with its own delay).
    pub duplicate_per_mille: u32,
}

impl Conditions {
    /// Instant delivery, nothing lost.
    pub fn perfect() -> Conditions {
        Conditions::default()
    }

    /// A fixed one-way delay.
    pub fn latency(latency: Duration) -> Conditions {
        Conditions {
            latency,
            ..Conditions::default()
        }
    }
}

struct InFlight<T> {
    at: Instant,
    order: u64,
    item: T,
}

impl<T> PartialEq for InFlight<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl<T> Eq for InFlight<T> {}
impl<T> PartialOrd for InFlight<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for InFlight<T> {
    // Earliest first out of a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// One direction of a network: what is sent arrives later, or twice, or never.
pub struct Link<T> {
    conditions: Conditions,
    rng: Rng,
    in_flight: BinaryHeap<InFlight<T>>,
    order: u64,
    /// Messages lost so far.
    pub lost: u64,
    /// Messages duplicated so far.
    pub duplicated: u64,
    /// Messages delivered so far.
    pub delivered: u64,
    /// While true, everything sent is lost (a peer that went silent).
    pub cut: bool,
}

impl<T: Clone> Link<T> {
    /// A link with these conditions, its randomness from `seed`.
    pub fn new(conditions: Conditions, seed: u64) -> Link<T> {
        Link {
            conditions,
            rng: Rng::new(seed),
            in_flight: BinaryHeap::new(),
            order: 0,
            lost: 0,
            duplicated: 0,
            delivered: 0,
            cut: false,
        }
    }

    /// Sends `item` at `now`.
    pub fn send(&mut self, now: Instant, item: T) {
        if self.cut || self.rng.chance(self.conditions.loss_per_mille) {
            self.lost += 1;
            return;
        }
        if self.rng.chance(self.conditions.duplicate_per_mille) {
            self.duplicated += 1;
            self.enqueue(now, item.clone());
        }
        self.enqueue(now, item);
    }

    fn enqueue(&mut self, now: Instant, item: T) {
        let at = now + self.conditions.latency + self.rng.upto(self.conditions.jitter);
        self.order += 1;
        self.in_flight.push(InFlight {
            at,
            order: self.order,
            item,
        });
    }

    /// The next message due at `now`, if any.
    pub fn receive(&mut self, now: Instant) -> Option<T> {
        if self.in_flight.peek().is_some_and(|f| f.at <= now) {
            self.delivered += 1;
            return self.in_flight.pop().map(|f| f.item);
        }
        None
    }

    /// When the next message arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|f| f.at)
    }
}

/// A sans-IO endpoint as a [`Pair`] drives it.
pub trait Endpoint {
    /// What crosses the link.
    type Message: Clone;
    /// The next message to send, if any.
    fn transmit(&mut self, now: Instant) -> Option<Self::Message>;
    /// A message arrived.
    fn receive(&mut self, now: Instant, message: Self::Message);
    /// When the endpoint next wants [`Endpoint::timeout`].
    fn next_timeout(&self) -> Option<Instant>;
    /// Time passed to `now`.
    fn timeout(&mut self, now: Instant);
}

/// An endpoint borrowed for a run: a test keeps its endpoints and lends them to a
/// [`Pair`] for one exchange.
impl<E: Endpoint + ?Sized> Endpoint for &mut E {
    type Message = E::Message;
    fn transmit(&mut self, now: Instant) -> Option<Self::Message> {
        (**self).transmit(now)
    }
    fn receive(&mut self, now: Instant, message: Self::Message) {
        (**self).receive(now, message)
    }
    fn next_timeout(&self) -> Option<Instant> {
        (**self).next_timeout()
    }
    fn timeout(&mut self, now: Instant) {
        (**self).timeout(now)
    }
}

/// Two endpoints, two links and a clock.
pub struct Pair<A: Endpoint, B: Endpoint<Message = A::Message>> {
    /// The first endpoint.
    pub a: A,
    /// The second.
    pub b: B,
    /// From `a` to `b`.
    pub a_to_b: Link<A::Message>,
    /// From `b` to `a`.
    pub b_to_a: Link<A::Message>,
    /// The simulated time.
    pub now: Instant,
}

/// Most steps one drive takes: a machine that never settles is a bug, not a hang.
const MAX_STEPS: usize = 100_000;

impl<A: Endpoint, B: Endpoint<Message = A::Message>> Pair<A, B> {
    /// Two endpoints over links with `conditions`, randomness from `seed`.
    pub fn new(a: A, b: B, conditions: Conditions, seed: u64) -> Pair<A, B> {
        let mut rng = Rng::new(seed);
        Pair {
            a,
            b,
            a_to_b: Link::new(conditions, rng.next_u64()),
            b_to_a: Link::new(conditions, rng.next_u64()),
            now: Instant::now(),
        }
    }

    /// Moves what is ready now: transmits onto the links, arrivals into the endpoints,
    /// due timeouts. Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(m) = self.a.transmit(self.now) {
            self.a_to_b.send(self.now, m);
            moved = true;
        }
        while let Some(m) = self.b.transmit(self.now) {
            self.b_to_a.send(self.now, m);
            moved = true;
        }
        while let Some(m) = self.a_to_b.receive(self.now) {
            self.b.receive(self.now, m);
            moved = true;
        }
        while let Some(m) = self.b_to_a.receive(self.now) {
            self.a.receive(self.now, m);
            moved = true;
        }
        if self.a.next_timeout().is_some_and(|t| t <= self.now) {
            self.a.timeout(self.now);
            moved = true;
        }
        if self.b.next_timeout().is_some_and(|t| t <= self.now) {
            self.b.timeout(self.now);
            moved = true;
        }
        moved
    }

    /// When the next thing is due.
    fn next_event(&self) -> Option<Instant> {
        [
            self.a_to_b.next_arrival(),
            self.b_to_a.next_arrival(),
            self.a.next_timeout(),
            self.b.next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until nothing is in flight or due, jumping the clock from event to event.
    /// Panics if the endpoints never settle.
    pub fn drive(&mut self) {
        self.drive_until(|_| false);
    }

    /// Runs for `d` of simulated time (or until idle earlier), then sets the clock to
    /// its end.
    pub fn drive_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0;
        loop {
            self.settle(&mut steps);
            match self.next_event() {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => {
                    self.now = end;
                    self.settle(&mut steps);
                    return;
                }
            }
        }
    }

    /// Steps until nothing moves at this instant, counting towards the bound.
    fn settle(&mut self, steps: &mut usize) {
        while self.step() {
            *steps += 1;
            assert!(
                *steps < MAX_STEPS,
                "the endpoints never settled within {MAX_STEPS} steps"
            );
        }
        *steps += 1;
        assert!(
            *steps < MAX_STEPS,
            "the endpoints never settled within {MAX_STEPS} steps"
        );
    }

    /// Runs until `done` says so (checked after each settled step) or nothing is left
    /// to do. Returns whether `done` was met.
    pub fn drive_until(&mut self, mut done: impl FnMut(&Self) -> bool) -> bool {
        let mut steps = 0;
        loop {
            self.settle(&mut steps);
            if done(self) {
                return true;
            }
            match self.next_event() {
                Some(t) => self.now = self.now.max(t),
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_delays_loses_and_duplicates_as_seeded() {
        let c = Conditions {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(30),
            loss_per_mille: 100,
            duplicate_per_mille: 100,
        };
        let run = |seed| {
            let mut link = Link::new(c, seed);
            let t0 = Instant::now();
            for i in 0..1000u32 {
                link.send(t0, i);
            }
            assert!(
                link.receive(t0 + Duration::from_millis(9)).is_none(),
                "latency"
            );
            let mut got = Vec::new();
            while let Some(i) = link.receive(t0 + Duration::from_millis(40)) {
                got.push(i);
            }
            (got, link.lost, link.duplicated)
        };
        let (got, lost, dup) = run(7);
        assert_eq!(run(7), (got.clone(), lost, dup), "a seed replays exactly");
        assert!((50..150).contains(&lost), "{lost} lost of 1000 at 10 %");
        assert!((50..150).contains(&dup), "{dup} duplicated of 1000 at 10 %");
        assert_eq!(got.len() as u64, 1000 - lost + dup);
        assert!(got.windows(2).any(|w| w[0] > w[1]), "jitter reorders");
    }

    /// Sends a number back after `delay`, `left` times.
    struct Echo {
        out: Vec<u32>,
        got: Vec<(Instant, u32)>,
    }

    impl Endpoint for Echo {
        type Message = u32;
        fn transmit(&mut self, _now: Instant) -> Option<u32> {
            self.out.pop()
        }
        fn receive(&mut self, now: Instant, m: u32) {
            self.got.push((now, m));
            if m > 0 {
                self.out.push(m - 1);
            }
        }
        fn next_timeout(&self) -> Option<Instant> {
            None
        }
        fn timeout(&mut self, _now: Instant) {}
    }

    fn echo() -> Echo {
        Echo {
            out: Vec::new(),
            got: Vec::new(),
        }
    }

    #[test]
    fn a_pair_jumps_the_clock_from_arrival_to_arrival() {
        let mut p = Pair::new(
            echo(),
            echo(),
            Conditions::latency(Duration::from_millis(50)),
            1,
        );
        let t0 = p.now;
        p.a.out.push(3);
        p.drive_for(Duration::from_millis(120));
        // 3 reaches b at 50 ms, 2 reaches a at 100 ms; 1 is still in flight.
        assert_eq!(p.b.got, vec![(t0 + Duration::from_millis(50), 3)]);
        assert_eq!(p.a.got, vec![(t0 + Duration::from_millis(100), 2)]);
        assert_eq!(p.now, t0 + Duration::from_millis(120));
        p.drive();
        assert_eq!(p.b.got.last(), Some(&(t0 + Duration::from_millis(150), 1)));
        assert_eq!(p.a.got.last(), Some(&(t0 + Duration::from_millis(200), 0)));
    }

    #[test]
    #[should_panic(expected = "never settled")]
    fn endpoints_that_never_settle_are_a_failure_not_a_hang() {
        let mut p = Pair::new(echo(), echo(), Conditions::perfect(), 1);
        p.a.out.push(u32::MAX);
        p.drive();
    }
}
