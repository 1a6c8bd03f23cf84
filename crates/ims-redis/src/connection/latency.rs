//! Slow counts as down: the command latency that a breaker counting only failures never sees.
//!
//! A Redis that answers every command, but slowly (swapping, a saturated network, a blocking
//! script or `DEBUG SLEEP` in a loop), fails nothing: each command finishes under the
//! 250 ms time-out, the breaker stays closed, and every request waits for its few sequential
//! commands in turn (a probe measured request medians of 200–600 ms). Here the round trips
//! of the commands are summed per window of [`WINDOW`]; when their mean over a window
//! reaches the slow threshold (`REDIS_SLOW_MS`, 50 ms by default) the connection is marked
//! down as for an outage, and requests take their degraded paths without waiting. After
//! any outage, slow or failed, it is marked up again only when [`RECOVERY_PINGS`] `PING`s
//! in a row each answer under the threshold, so a Redis that is fast now and then (or
//! times out now and then) does not flap between the two states (every recovery flushes
//! the cache). A mean, not a single slow command: one expensive
//! script or a fork's pause slows a few commands, not a window's worth.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How long the round trips are summed before their mean is judged.
pub(super) const WINDOW: Duration = Duration::from_millis(500);

/// A window with fewer commands than this is not judged: too few to tell a slow Redis from
/// one slow command.
const MIN_SAMPLES: u64 = 4;

/// `PING`s in a row under the threshold that end a slow period.
pub(super) const RECOVERY_PINGS: u32 = 3;

/// Bits of the window's packed word that hold the summed microseconds; the count is above.
/// One atomic add per command records both.
const SUM_BITS: u32 = 40;
const SUM_MASK: u64 = (1 << SUM_BITS) - 1;

/// One round trip counts at most this many µs (67 s, past the largest command time-out), so
/// that the sum cannot spill into the count before 16,384 such commands end in one window.
const MAX_RECORDED: u64 = (1 << 26) - 1;

/// The latency watch of one connection.
#[derive(Debug)]
pub(super) struct Latency {
    /// The mean round trip that counts as down; zero turns the watch off.
    threshold: Duration,
    /// This window's commands (high bits) and their summed round trips in µs (low bits).
    window: AtomicU64,
    /// Set when the connection went down, until [`RECOVERY_PINGS`] fast `PING`s in a row.
    down: AtomicBool,
    /// Fast `PING`s in a row since the connection went down.
    fast_pings: AtomicU32,
}

/// What a `PING` that answered means for the breaker.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PingVerdict {
    /// Close it: Redis answers, and fast enough.
    Up,
    /// Keep it as it is: slower than the threshold, or a slow period not over yet.
    Wait,
}

impl Latency {
    pub(super) fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            window: AtomicU64::new(0),
            down: AtomicBool::new(false),
            fast_pings: AtomicU32::new(0),
        }
    }

    /// Records one command's round trip (on the request path: one atomic add).
    pub(super) fn record(&self, took: Duration) {
        if self.threshold.is_zero() {
            return;
        }
        let micros = u64::try_from(took.as_micros())
            .unwrap_or(MAX_RECORDED)
            .min(MAX_RECORDED);
        self.window
            .fetch_add((1 << SUM_BITS) + micros, Ordering::Relaxed);
    }

    /// Ends the window: the mean round trip of its commands if that is slow (the caller
    /// marks the connection down), else `None`. Also clears the window while the connection
    /// is down, so that a new one starts from the moment it is back.
    pub(super) fn end_window(&self) -> Option<Duration> {
        let packed = self.window.swap(0, Ordering::Relaxed);
        let (count, micros) = (packed >> SUM_BITS, packed & SUM_MASK);
        if self.threshold.is_zero() || count < MIN_SAMPLES {
            return None;
        }
        let mean = Duration::from_micros(micros / count);
        (mean >= self.threshold).then_some(mean)
    }

    /// Notes that the connection went down (slow, failed or timed out).
    pub(super) fn went_down(&self) {
        self.fast_pings.store(0, Ordering::Relaxed);
        self.down.store(true, Ordering::Release);
    }

    /// True from an outage until the pings that end it.
    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Judges a `PING` that answered in `took`: only one under the threshold counts, and
    /// after an outage only the last of [`RECOVERY_PINGS`] such ones in a row closes the
    /// breaker.
    pub(super) fn judge_ping(&self, took: Duration) -> PingVerdict {
        if self.threshold.is_zero() {
            return PingVerdict::Up;
        }
        if took >= self.threshold {
            self.fast_pings.store(0, Ordering::Relaxed);
            return PingVerdict::Wait;
        }
        if !self.is_down() {
            return PingVerdict::Up;
        }
        if self.fast_pings.fetch_add(1, Ordering::Relaxed) + 1 >= RECOVERY_PINGS {
            self.down.store(false, Ordering::Release);
            self.fast_pings.store(0, Ordering::Relaxed);
            return PingVerdict::Up;
        }
        PingVerdict::Wait
    }

    /// True while a recovery is under way: the last `PING` was fast but not yet the last
    /// one needed (the probe then pings again at once).
    pub(super) fn recovering(&self) -> bool {
        self.is_down() && self.fast_pings.load(Ordering::Relaxed) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_window_is_slow_by_its_mean_and_only_with_enough_commands() {
        let latency = Latency::new(50 * MS);
        for _ in 0..3 {
            latency.record(200 * MS);
        }
        assert_eq!(latency.end_window(), None, "three commands are too few");
        for took in [10, 90, 60, 40] {
            latency.record(took * MS);
        }
        assert_eq!(latency.end_window(), Some(50 * MS));
        assert_eq!(latency.end_window(), None, "the window starts empty again");
        // One slow command among many fast ones is a slow command, not a slow Redis.
        latency.record(240 * MS);
        for _ in 0..20 {
            latency.record(MS);
        }
        assert_eq!(latency.end_window(), None);
    }

    #[test]
    fn an_outage_ends_only_after_fast_pings_in_a_row() {
        let latency = Latency::new(50 * MS);
        assert_eq!(latency.judge_ping(80 * MS), PingVerdict::Wait);
        assert_eq!(latency.judge_ping(MS), PingVerdict::Up);
        latency.went_down();
        assert_eq!(latency.judge_ping(MS), PingVerdict::Wait);
        assert!(latency.recovering());
        assert_eq!(latency.judge_ping(MS), PingVerdict::Wait);
        assert_eq!(
            latency.judge_ping(60 * MS),
            PingVerdict::Wait,
            "streak broken"
        );
        assert!(!latency.recovering());
        for _ in 1..RECOVERY_PINGS {
            assert_eq!(latency.judge_ping(MS), PingVerdict::Wait);
        }
        assert_eq!(latency.judge_ping(MS), PingVerdict::Up);
        assert!(!latency.is_down());
    }

    #[test]
    fn a_zero_threshold_turns_the_watch_off() {
        let latency = Latency::new(Duration::ZERO);
        for _ in 0..10 {
            latency.record(Duration::from_secs(1));
        }
        assert_eq!(latency.end_window(), None);
        assert_eq!(latency.judge_ping(Duration::from_secs(1)), PingVerdict::Up);
    }

    #[test]
    fn huge_round_trips_saturate_instead_of_spilling_into_the_count() {
        let latency = Latency::new(50 * MS);
        for _ in 0..5000 {
            latency.record(Duration::from_secs(u64::MAX / 2));
        }
        let mean = latency.end_window().expect("slow");
        assert!(mean >= Duration::from_secs(60), "{mean:?}");
    }
}
