//! What one client may cost the server: token buckets (messages per connection, TURN
//! credentials per address, log lines) and counts of open signaling sockets per address.
//!
//! No I/O: time is an argument, so the tests drive the clock.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use crate::server::hub::lock;

/// `rate` tokens a second, holding at most `burst`: a steady pace passes, and so does a
/// short burst after a quiet spell. It refills, so a burst minutes later is judged afresh.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate_per_second: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: rate_per_second, burst, tokens: burst, refilled: now }
    }

    /// Takes a token at `now`; false when none is left.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.take_n(1, now)
    }

    /// Takes `n` tokens at `now`, or none if fewer are left.
    pub(crate) fn take_n(&mut self, n: u32, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= f64::from(n) {
            self.tokens -= f64::from(n);
            true
        } else {
            false
        }
    }

    /// Charges `n` tokens that were not there (something refused still cost the server):
    /// the bucket goes into debt, which it must refill before anything passes again. Returns
    /// whether the debt is now deeper than the burst.
    pub(crate) fn charge(&mut self, n: u32) -> bool {
        self.tokens -= f64::from(n);
        self.tokens < -self.burst
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Full again: the same as a new bucket, so it need not be kept.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// The per-connection rate limit: a token bucket that refused frames drive into debt.
pub(crate) struct Flood {
    bucket: TokenBucket,
    burst: u32,
    /// Frames have been refused since one last passed.
    refusing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Pass,
    /// Dropped; `first` of this run of refusals (the one that gets the `rate_limited` error).
    Refuse {
        first: bool,
    },
    /// The refused frames' debt is deeper than the burst: the peer is not slowing down.
    Close,
}

impl Flood {
    pub(crate) fn new(messages_per_second: u32, now: Instant) -> Self {
        let burst = messages_per_second.saturating_mul(4);
        Self { bucket: TokenBucket::new(f64::from(messages_per_second), burst, now), burst, refusing: false }
    }

    /// A frame of `len` bytes costs a token per KiB begun (at most the burst): reading and
    /// checking a big frame costs the server more. A refused frame is charged too, so only a
    /// peer that keeps under the rate on average stays connected: one that floods just fast
    /// enough for a frame to pass now and then still runs up its debt.
    pub(crate) fn admit(&mut self, len: usize, now: Instant) -> Admit {
        let cost = self.cost(len);
        if self.bucket.take_n(cost, now) {
            self.refusing = false;
            return Admit::Pass;
        }
        self.charge(cost)
    }

    /// Refuses a frame that passed but could not be delivered (its recipient, reading, had as
    /// much from this peer waiting as one peer may fill): it costs again, as a refused frame.
    pub(crate) fn refuse(&mut self, len: usize) -> Admit {
        self.charge(self.cost(len))
    }

    fn cost(&self, len: usize) -> u32 {
        u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, self.burst.max(1))
    }

    fn charge(&mut self, cost: u32) -> Admit {
        let first = !std::mem::replace(&mut self.refusing, true);
        if self.bucket.charge(cost) {
            Admit::Close
        } else {
            Admit::Refuse { first }
        }
    }
}

/// Whom a limit counts: an IPv4 address, or an IPv6 /64 (one subscriber's usual allocation,
/// which would otherwise give one person 2^64 addresses).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// A token bucket per client address, for something a client may have only so much of.
pub(crate) struct PerClient {
    buckets: Mutex<Buckets>,
    rate_per_second: f64,
    burst: u32,
}

#[derive(Default)]
struct Buckets {
    by_client: HashMap<IpAddr, TokenBucket>,
    /// Size at which full buckets are next forgotten: twice what was left after the last time,
    /// so that pruning costs O(1) a call however many clients there are.
    prune_at: usize,
}

/// Addresses tracked before full buckets are first forgotten.
const PRUNE_ABOVE: usize = 4096;

impl PerClient {
    pub(crate) fn new(rate_per_second: f64, burst: u32) -> Self {
        Self { buckets: Mutex::default(), rate_per_second, burst }
    }

    pub(crate) fn take(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = lock(&self.buckets);
        if buckets.by_client.len() >= buckets.prune_at.max(PRUNE_ABOVE) {
            buckets.by_client.retain(|_, bucket| !bucket.is_full(now));
            buckets.prune_at = buckets.by_client.len() * 2;
        }
        let (rate, burst) = (self.rate_per_second, self.burst);
        buckets.by_client.entry(client_key(ip)).or_insert_with(|| TokenBucket::new(rate, burst, now)).take(now)
    }
}

/// Open connections or signaling sockets per client address, at most `max` each.
pub(crate) struct OpenPerClient {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// One open socket, counted until dropped.
pub(crate) struct Open {
    counter: Arc<OpenPerClient>,
    key: IpAddr,
}

impl OpenPerClient {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { open: Mutex::default(), max })
    }

    /// Counts one more socket for `ip`, or `None` if it already has `max`.
    pub(crate) fn open(self: &Arc<Self>, ip: IpAddr) -> Option<Open> {
        let key = client_key(ip);
        let mut open = lock(&self.open);
        let count = open.entry(key).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Open { counter: self.clone(), key })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = lock(&self.counter.open);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Log lines that a client can cause (a flood, a slow reader), at most a few a second for the
/// whole server: each says how many like it were left out.
#[derive(Default)]
pub(crate) struct LogThrottle {
    state: Mutex<(Option<TokenBucket>, u64)>,
}

impl LogThrottle {
    pub(crate) const fn new() -> Self {
        Self { state: Mutex::new((None, 0)) }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were left out before it.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = lock(&self.state);
        let (bucket, suppressed) = &mut *state;
        if bucket.get_or_insert_with(|| TokenBucket::new(1.0, 5, now)).take(now) {
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_refuses_then_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 40, start);
        assert_eq!((0..41).filter(|_| bucket.take(start)).count(), 40);
        assert!(bucket.take(start + Duration::from_millis(100)), "a token comes back after 1/10 s");
        assert!(!bucket.take(start + Duration::from_millis(100)));
        let later = start + Duration::from_secs(600);
        assert_eq!((0..41).filter(|_| bucket.take(later)).count(), 40, "a later burst is judged afresh");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn per_client_buckets_are_separate_and_forgotten_when_full() {
        let now = Instant::now();
        let limit = PerClient::new(1.0, 2);
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(limit.take(a, now) && limit.take(a, now) && !limit.take(a, now));
        assert!(limit.take(b, now), "another address has its own");
        // A new address every millisecond: each bucket is full again a second after its use,
        // and forgotten at a later pruning, so the map stays bounded.
        for i in 0..(4 * PRUNE_ABOVE as u32) {
            let at = now + std::time::Duration::from_millis(u64::from(i));
            limit.take(IpAddr::V4((0x0a00_0000 + i).into()), at);
        }
        let tracked = lock(&limit.buckets).by_client.len();
        assert!(tracked < 2 * PRUNE_ABOVE, "{tracked} addresses tracked");
    }

    #[test]
    fn open_sockets_are_capped_per_client_and_freed_on_drop() {
        let counter = OpenPerClient::new(2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = counter.open(ip).unwrap();
        let _second = counter.open(ip).unwrap();
        assert!(counter.open(ip).is_none());
        assert!(counter.open("192.0.2.8".parse().unwrap()).is_some());
        drop(first);
        assert!(counter.open(ip).is_some());
    }

    #[test]
    fn a_log_throttle_passes_a_few_lines_and_counts_the_rest() {
        let throttle = LogThrottle::new();
        let now = Instant::now();
        assert_eq!((0..100).filter_map(|_| throttle.allow(now)).count(), 5);
        assert_eq!(throttle.allow(now + Duration::from_secs(1)), Some(95));
    }

    #[test]
    fn a_flood_is_refused_then_closed_but_a_later_burst_starts_afresh() {
        let start = Instant::now();
        let mut flood = Flood::new(1, start);
        assert!((0..4).all(|_| matches!(flood.admit(100, start), Admit::Pass)), "a burst of 4x the rate");
        assert!(matches!(flood.admit(100, start), Admit::Refuse { first: true }));
        assert!((0..3).all(|_| matches!(flood.admit(100, start), Admit::Refuse { first: false })));
        assert!(matches!(flood.admit(100, start), Admit::Close), "a debt deeper than the burst");
        // After a quiet spell that pays the debt back and refills, a burst is judged afresh.
        let mut flood = Flood::new(1, start);
        assert!((0..4).all(|_| matches!(flood.admit(100, start), Admit::Pass)));
        assert!(matches!(flood.admit(100, start), Admit::Refuse { first: true }));
        let minutes_later = start + Duration::from_secs(300);
        assert!((0..4).all(|_| matches!(flood.admit(100, minutes_later), Admit::Pass)));
        assert!(matches!(flood.admit(100, minutes_later), Admit::Refuse { first: true }));
    }

    #[test]
    fn a_flood_just_fast_enough_for_a_frame_to_pass_now_and_then_is_still_closed() {
        let start = Instant::now();
        let mut flood = Flood::new(50, start);
        // 10,000 frames a second, against 50 allowed: one would pass every 20 ms if refused
        // frames cost nothing.
        let closed = (0..100_000)
            .map(|i| start + Duration::from_micros(100 * i))
            .position(|now| matches!(flood.admit(100, now), Admit::Close));
        assert!(closed.is_some_and(|frame| frame < 1000), "closed after {closed:?} frames");
    }

    #[test]
    fn a_frame_costs_a_token_per_kib_begun() {
        let start = Instant::now();
        let mut flood = Flood::new(50, start); // 200 tokens
        assert!((0..3).all(|_| matches!(flood.admit(60 * 1024, start), Admit::Pass)));
        assert!(matches!(flood.admit(60 * 1024, start), Admit::Refuse { first: true }), "20 tokens left, 60 needed");
        // That refusal cost 60 too (20 - 60 = -40): a second later, 50 more make 10.
        let later = start + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| matches!(flood.admit(1, later), Admit::Pass)).count(), 10);
        // Big refused frames end a flood after the burst's worth of KiB, not of frames.
        let mut flood = Flood::new(50, start);
        assert!((0..3).all(|_| matches!(flood.admit(60 * 1024, start), Admit::Pass)));
        assert!((0..3).all(|_| matches!(flood.admit(60 * 1024, start), Admit::Refuse { .. })));
        assert!(matches!(flood.admit(60 * 1024, start), Admit::Close));
        // Never more than the burst, so a frame under the size limit can always pass in time.
        let mut tiny = Flood::new(1, start);
        assert!(matches!(tiny.admit(64 * 1024, start), Admit::Pass));
    }
}
