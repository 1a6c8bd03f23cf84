//! The in-process store of admissions while Redis is away, one per key, bounded whatever
//! the limit. A log of instants, as Redis keeps, holds up to `limit` of them: 16 bytes
//! each, so a limit of a million per window could hold 16 MB for one busy key, across up to
//! the limiter's 100,000 keys (found by a code review). Admissions are counted instead per
//! slice of the window, a 64th of it: at most 66 slices, about a kilobyte, for any limit.
//! Every slice that overlaps the window counts whole, which counts a superset of the
//! window's admissions: the limit is never exceeded, and a slot frees at most one slice
//! (a 64th of the window) late. Written by hand: the crates that count windows in memory
//! (`governor`'s GCRA among them) approximate the other way, or keep no per-window count
//! to give an admission back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Quota;

/// Slices per window.
const SLICES: u32 = 64;

/// A key's admissions, counted per slice of its window.
#[derive(Debug)]
pub(crate) struct Slices {
    origin: Instant,
    width: Duration,
    /// (slice index since `origin`, admissions in it), oldest first; no zero counts.
    counts: VecDeque<(u64, u32)>,
}

/// What one admission attempt found.
pub(crate) struct Counted {
    /// Admitted, and counted.
    pub(crate) allowed: bool,
    /// Admissions in the window, this one included if admitted.
    pub(crate) in_window: u32,
    /// Until the oldest counted slice leaves the window (a slot frees), at most the
    /// window; the window when nothing is counted.
    pub(crate) reset: Duration,
}

impl Slices {
    /// No admissions yet, for a key limited by `quota`.
    pub(crate) fn new(now: Instant, quota: Quota) -> Self {
        Self {
            origin: now,
            width: (quota.window / SLICES).max(Duration::from_millis(1)),
            counts: VecDeque::new(),
        }
    }

    fn index(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.width.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds since `origin` at which slice `index` ends.
    fn end(&self, index: u64) -> u128 {
        (u128::from(index) + 1) * self.width.as_nanos()
    }

    /// Admits one request at `now` if fewer than `quota.limit` are counted in the window.
    pub(crate) fn admit(&mut self, now: Instant, quota: Quota) -> Counted {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let window = quota.window.as_nanos();
        while let Some(&(index, _)) = self.counts.front() {
            if self.end(index) + window > since {
                break;
            }
            self.counts.pop_front();
        }
        let counted: u32 = self.counts.iter().map(|(_, n)| *n).sum();
        let allowed = counted < quota.limit;
        if allowed {
            let index = self.index(now);
            match self.counts.back_mut() {
                Some((last, n)) if *last == index => *n += 1,
                _ => self.counts.push_back((index, 1)),
            }
        }
        // At most the window, as a client reading `RateLimit-Reset` expects, though the
        // slot may free up to a slice later.
        let reset = self.counts.front().map_or(quota.window, |&(index, _)| {
            let frees = (self.end(index) + window).saturating_sub(since);
            Duration::from_nanos(u64::try_from(frees).unwrap_or(u64::MAX)).min(quota.window)
        });
        Counted {
            allowed,
            in_window: counted + u32::from(allowed),
            reset,
        }
    }

    /// Takes back an admission made at `at` (refused by another policy).
    pub(crate) fn give_back(&mut self, at: Instant) {
        let index = self.index(at);
        if let Some(at) = self.counts.iter().rposition(|(i, _)| *i == index) {
            self.counts[at].1 -= 1;
            if self.counts[at].1 == 0 {
                self.counts.remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u32, window_ms: u64) -> Quota {
        Quota {
            limit,
            window: Duration::from_millis(window_ms),
        }
    }

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        // Requests every 7 ms for 5 windows of 640 ms (10 ms slices), limit 20: count the
        // admissions in every window ending at an admission.
        let (start, q) = (Instant::now(), quota(20, 640));
        let mut slices = Slices::new(start, q);
        let mut admitted = Vec::new();
        for step in 0..460u64 {
            let now = start + Duration::from_millis(step * 7);
            if slices.admit(now, q).allowed {
                admitted.push(now);
            }
        }
        for (i, end) in admitted.iter().enumerate() {
            let in_window = admitted[..=i]
                .iter()
                .filter(|t| end.duration_since(**t) < q.window)
                .count();
            assert!(in_window <= 20, "{in_window} at {i}");
        }
        // And not much fewer: the window frees up at most a slice late.
        assert!(admitted.len() >= 5 * 20 - 5, "{}", admitted.len());
    }

    #[test]
    fn a_huge_limit_keeps_a_bounded_record() {
        let (start, q) = (Instant::now(), quota(1_000_000, 60_000));
        let mut slices = Slices::new(start, q);
        for step in 0..100_000u64 {
            assert!(
                slices
                    .admit(start + Duration::from_micros(step * 600), q)
                    .allowed
            );
        }
        assert!(slices.counts.len() <= 66, "{}", slices.counts.len());
    }

    #[test]
    fn a_given_back_admission_frees_its_slot() {
        let (start, q) = (Instant::now(), quota(2, 1000));
        let mut slices = Slices::new(start, q);
        assert!(slices.admit(start, q).allowed);
        let second = slices.admit(start, q);
        assert!(second.allowed && second.in_window == 2);
        assert!(!slices.admit(start, q).allowed);
        slices.give_back(start);
        assert!(slices.admit(start, q).allowed);
        let refused = slices.admit(start + Duration::from_millis(500), q);
        assert!(!refused.allowed);
        assert!(
            refused.reset <= Duration::from_millis(516),
            "{:?}",
            refused.reset
        );
        assert!(slices.admit(start + Duration::from_millis(1016), q).allowed);
    }
}
