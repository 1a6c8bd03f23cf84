//! Slow counts as down, and down ends only when Redis has been fast for a while: what a
//! breaker that counts failures never sees.
//!
//! A Redis that answers every command, but slowly (swapping, a saturated network, a blocking
//! script or `DEBUG SLEEP` in a loop), fails nothing: each command finishes under the
//! 250 ms time-out, the breaker stays closed, and every request waits for its few sequential
//! commands in turn (a probe measured request medians of 200–600 ms). Here the round trips
//! of the commands are summed per window of at least [`WINDOW`] and [`MIN_SAMPLES`] round
//! trips (on an idle instance the probe's `PING`s fill in, counted twice: see
//! [`Latency::record_ping`]); when their mean reaches the slow threshold (`REDIS_SLOW_MS`,
//! 50 ms by default) the connection is marked down as for an outage, and requests take
//! their degraded paths without waiting. A mean, not a single slow command: one expensive
//! script or a fork's pause slows a few commands, not a window's worth.
//!
//! After any outage, slow or failed, the connection is marked up again only when the
//! probe's `PING`s on [`RECOVERY_PINGS`] ticks in a row (half a second apart on average,
//! at random points, so that they sample a repeating stall at random phases) each answer
//! under half the threshold (a lone `PING` waits behind less than a request's
//! commands do: with 60 ms scripts back to back, `PING`s averaged 30 ms where commands
//! averaged 75), and, when the connection went down again within
//! [`FLAP_SPAN`] of its last recovery, not before a hold-down that doubles with each such
//! outage (1 s, 2 s, 4 s … up to [`MAX_HOLD`]). Every recovery flushes the cache and moves
//! the rate limits back to Redis, so a Redis that is fast now and then must not flap: a
//! probe found three back-to-back `PING`s slipping in between 60 ms scripts, and `/health`'s
//! `PING`s counted too, for 68 outages in a minute. Only the probe's `PING`s count now.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest window whose mean is judged.
pub(super) const WINDOW: Duration = Duration::from_millis(500);

/// A window is judged once it holds this many round trips (an idle instance's probe adds
/// one per tick): fewer cannot tell a slow Redis from one slow command.
const MIN_SAMPLES: u64 = 4;

/// A window that has not gathered [`MIN_SAMPLES`] round trips by then starts over.
const MAX_WINDOW: Duration = Duration::from_secs(10);

/// Probe ticks in a row whose `PING` answered under the threshold that end an outage.
const RECOVERY_PINGS: u32 = 3;

/// An outage that starts this soon after the last recovery counts as a flap: its hold-down
/// is twice the last one.
const FLAP_SPAN: Duration = Duration::from_secs(60);

/// The first flap's hold-down.
const MIN_HOLD: Duration = Duration::from_secs(1);

/// The longest hold-down.
const MAX_HOLD: Duration = Duration::from_secs(30);

/// Bits of the window's packed word that hold the summed microseconds; the count is above.
/// One atomic add per command records both.
const SUM_BITS: u32 = 40;
const SUM_MASK: u64 = (1 << SUM_BITS) - 1;

/// One round trip counts at most this many µs (67 s, past the largest command time-out), so
/// that the sum cannot spill into the count before 16,384 such commands end in one window.
const MAX_RECORDED: u64 = (1 << 26) - 1;

/// The latency watch and recovery rule of one connection.
#[derive(Debug)]
pub(super) struct Latency {
    /// The mean round trip that counts as down; zero turns the slowness watch off (outages
    /// still end by the recovery rule, with any answer counting as fast).
    threshold: Duration,
    /// This window's round trips (high bits) and their sum in µs (low bits).
    window: AtomicU64,
    /// When this window started; touched by the probe only.
    window_started: Mutex<Instant>,
    recovery: Mutex<Recovery>,
}

#[derive(Debug)]
struct Recovery {
    /// Probe ticks in a row with a fast `PING` since the connection went down.
    fast_ticks: u32,
    /// When the connection last went down and last came back.
    down_at: Option<Instant>,
    up_at: Option<Instant>,
    /// How long this outage lasts at least.
    hold: Duration,
}

/// The verdict on a window of round trips.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Too soon, or too few round trips: keep gathering.
    Open,
    /// Judged: fast enough; a new window starts.
    Fast,
    /// Judged: this mean round trip is at or above the threshold.
    Slow(Duration),
}

impl Latency {
    pub(super) fn new(threshold: Duration) -> Self {
        Self {
            threshold,
            window: AtomicU64::new(0),
            window_started: Mutex::new(Instant::now()),
            recovery: Mutex::new(Recovery {
                fast_ticks: 0,
                down_at: None,
                up_at: None,
                hold: Duration::ZERO,
            }),
        }
    }

    /// The mean round trip that counts as down (zero: never).
    pub(super) fn threshold(&self) -> Duration {
        self.threshold
    }

    /// Records one round trip (on the request path: one atomic add).
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

    /// Records the probe's `PING` while the connection is up, if this window has too few
    /// commands to be judged (an idle instance): twice its round trip. A lone `PING` lands
    /// at a random moment of a stall and waits half of it on average, where a request's
    /// commands, each sent as the last one's answer comes, wait all of it (with 60 ms
    /// scripts back to back: 30 ms against 55; counted as they are, the probe's `PING`s
    /// kept a busy test instance's mean under the threshold).
    pub(super) fn record_ping(&self, took: Duration) {
        if self.window.load(Ordering::Relaxed) >> SUM_BITS < MIN_SAMPLES {
            self.record(took.saturating_mul(2));
        }
    }

    /// Judges the window at `now` (called by the probe on each tick while the connection is
    /// up): once it is [`WINDOW`] old and holds [`MIN_SAMPLES`] round trips, its mean decides
    /// and a new one starts.
    pub(super) fn judge(&self, now: Instant) -> Verdict {
        let Ok(mut started) = self.window_started.lock() else {
            return Verdict::Open;
        };
        let age = now.saturating_duration_since(*started);
        let packed = self.window.load(Ordering::Relaxed);
        let count = packed >> SUM_BITS;
        if self.threshold.is_zero() || age < WINDOW {
            return Verdict::Open;
        }
        if count < MIN_SAMPLES {
            if age >= MAX_WINDOW {
                self.restart(&mut started, now);
            }
            return Verdict::Open;
        }
        let packed = self.window.swap(0, Ordering::Relaxed);
        *started = now;
        let (count, micros) = ((packed >> SUM_BITS).max(1), packed & SUM_MASK);
        let mean = Duration::from_micros(micros / count);
        if mean >= self.threshold {
            Verdict::Slow(mean)
        } else {
            Verdict::Fast
        }
    }

    fn restart(&self, started: &mut Instant, now: Instant) {
        self.window.store(0, Ordering::Relaxed);
        *started = now;
    }

    /// Notes that the connection went down at `now` (slow, failed or timed out), and sets
    /// the outage's hold-down: none, or twice the last when it came soon after a recovery.
    pub(super) fn went_down(&self, now: Instant) {
        let Ok(mut recovery) = self.recovery.lock() else {
            return;
        };
        let flapping = recovery
            .up_at
            .is_some_and(|up| now.saturating_duration_since(up) < FLAP_SPAN);
        recovery.hold = if flapping {
            (recovery.hold * 2).clamp(MIN_HOLD, MAX_HOLD)
        } else {
            Duration::ZERO
        };
        recovery.fast_ticks = 0;
        recovery.down_at = Some(now);
    }

    /// Judges the probe's `PING` of one tick while the connection is down, answered in
    /// `took`: true when the outage is over (the connection may be marked up). Fast means
    /// under half the threshold.
    pub(super) fn recovered(&self, took: Duration, now: Instant) -> bool {
        let Ok(mut recovery) = self.recovery.lock() else {
            return true;
        };
        if !self.threshold.is_zero() && took >= self.threshold / 2 {
            recovery.fast_ticks = 0;
            return false;
        }
        recovery.fast_ticks += 1;
        let held = recovery
            .down_at
            .is_none_or(|down| now.saturating_duration_since(down) >= recovery.hold);
        if recovery.fast_ticks < RECOVERY_PINGS || !held {
            return false;
        }
        recovery.fast_ticks = 0;
        recovery.up_at = Some(now);
        if let Ok(mut started) = self.window_started.lock() {
            self.restart(&mut started, now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_window_is_judged_by_its_mean_once_old_and_full_enough() {
        let start = Instant::now();
        let latency = Latency::new(50 * MS);
        for _ in 0..3 {
            latency.record(200 * MS);
        }
        assert_eq!(
            latency.judge(start + 600 * MS),
            Verdict::Open,
            "three are too few"
        );
        latency.record(10 * MS);
        assert_eq!(
            latency.judge(start + 600 * MS),
            Verdict::Slow(152_500 * MS / 1000)
        );
        for took in [10, 90, 60, 40] {
            latency.record(took * MS);
        }
        assert_eq!(latency.judge(start + 900 * MS), Verdict::Open, "too young");
        assert_eq!(latency.judge(start + 1100 * MS), Verdict::Slow(50 * MS));
        // One slow command among many fast ones is a slow command, not a slow Redis.
        latency.record(240 * MS);
        for _ in 0..20 {
            latency.record(MS);
        }
        assert_eq!(latency.judge(start + 1700 * MS), Verdict::Fast);
        // A window that never fills starts over.
        latency.record(300 * MS);
        assert_eq!(latency.judge(start + 12 * 1000 * MS), Verdict::Open);
        for _ in 0..4 {
            latency.record(MS);
        }
        assert_eq!(latency.judge(start + 12_600 * MS), Verdict::Fast);
    }

    #[test]
    fn the_probe_fills_in_an_idle_window_only() {
        let latency = Latency::new(50 * MS);
        for _ in 0..4 {
            latency.record_ping(30 * MS);
        }
        assert_eq!(
            latency.judge(Instant::now() + WINDOW),
            Verdict::Slow(60 * MS)
        );
        for _ in 0..4 {
            latency.record(10 * MS);
        }
        latency.record_ping(100 * MS);
        assert_eq!(latency.judge(Instant::now() + 2 * WINDOW), Verdict::Fast);
    }

    #[test]
    fn an_outage_ends_after_fast_pings_on_ticks_in_a_row() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let latency = Latency::new(50 * MS);
        latency.went_down(at(0));
        assert!(!latency.recovered(MS, at(500)));
        assert!(!latency.recovered(MS, at(1000)));
        assert!(
            !latency.recovered(25 * MS, at(1500)),
            "slow: the streak starts over"
        );
        assert!(!latency.recovered(MS, at(2000)));
        assert!(!latency.recovered(MS, at(2500)));
        assert!(latency.recovered(MS, at(3000)));
    }

    #[test]
    fn outages_soon_after_a_recovery_are_held_down_longer_each_time() {
        let start = Instant::now();
        let latency = Latency::new(50 * MS);
        // Down at `now`, then a fast PING every 500 ms: how long the outage lasts.
        let outage = |now: &mut Instant| {
            latency.went_down(*now);
            let down = *now;
            loop {
                *now += 500 * MS;
                if latency.recovered(MS, *now) {
                    return *now - down;
                }
            }
        };
        let mut now = start;
        // The first outage ends after three fast ticks; each that follows within a minute
        // of a recovery is held down twice as long as the last.
        let lasted: Vec<f64> = (0..8).map(|_| outage(&mut now).as_secs_f64()).collect();
        assert_eq!(lasted, [1.5, 1.5, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
        // A minute of health later, an outage is a first one again.
        now += FLAP_SPAN;
        assert_eq!(outage(&mut now), 1500 * MS);
    }

    #[test]
    fn a_zero_threshold_turns_the_watch_off_but_not_the_recovery_rule() {
        let start = Instant::now();
        let latency = Latency::new(Duration::ZERO);
        for _ in 0..10 {
            latency.record(Duration::from_secs(1));
        }
        assert_eq!(latency.judge(start + Duration::from_secs(1)), Verdict::Open);
        latency.went_down(start);
        assert!(!latency.recovered(Duration::from_secs(1), start));
        assert!(!latency.recovered(Duration::from_secs(1), start));
        assert!(latency.recovered(Duration::from_secs(1), start));
    }

    #[test]
    fn huge_round_trips_saturate_instead_of_spilling_into_the_count() {
        let latency = Latency::new(50 * MS);
        for _ in 0..5000 {
            latency.record(Duration::from_secs(u64::MAX / 2));
        }
        let Verdict::Slow(mean) = latency.judge(Instant::now() + WINDOW) else {
            panic!("slow");
        };
        assert!(mean >= Duration::from_secs(60), "{mean:?}");
    }
}
