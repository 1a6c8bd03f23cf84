//! Local leases on a Redis sliding log: a busy key's admissions reserved a few at a time,
//! so that most requests of a hot client are decided in process, without losing exactness.
//!
//! **Why it stays exact.** The limit promises at most `limit` admissions in any window.
//! The Redis log counts one entry per admission (stored as runs of equal stamps); an entry
//! stamped `s` counts until `s + window`. A reservation made when Redis' clock reads `now` pushes `n` entries
//! stamped `now + term` and hands them to this instance, which admits with them only until
//! `term` has passed since it *sent* the reservation (so before `now + term` on any clock).
//! Each admission therefore has an entry that was pushed before it happened and counts for
//! at least a whole window after it, so at every moment the admissions of the last window
//! are at most the live entries, which the script keeps at or below `limit`. Unused
//! entries only make the limit stricter until they are given back (with the key's next
//! reservation) or expire.
//!
//! **Why it pays.** A reservation costs one script call whatever its size; a client
//! sending a hundred requests a second to a route pays for a few calls, not a hundred.
//! Sizes adapt per key: one (no lease, the plain exact check) for a client slower than one
//! request per term; while reservations are used up within their term, enough for a whole
//! term at the pace the last one went (at least double the last), so a busy client reaches
//! its size in a call or two; shrunk by what is handed back. A busy key reserves its next lease *ahead*: when a quarter of
//! the current one is left, one request sends the next reservation in the background and
//! goes on with a slot it already has, so the key's requests do not stall for a round trip
//! every time a lease runs out (each lease still admits only within its own term from its
//! own sending, so the argument above holds for both). Only quotas of at least [`MIN_LEASED_LIMIT`] lease at all, and
//! never more than a sixteenth of the limit at once, so a small limit (5 logins per 15
//! minutes) is always checked in Redis, request by request.
//!
//! No crate offers this (rate-limit crates keep either local or per-request remote state),
//! so it is written here.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Quota;

/// Quotas below this limit never lease: every request is its own check.
pub const MIN_LEASED_LIMIT: u32 = 32;

/// The largest reservation.
pub const MAX_LEASE: u32 = 1024;

/// How long a reservation may be used (and how much longer its entries count), at most.
const MAX_TERM: Duration = Duration::from_secs(1);

/// Paces are measured over at least this long (two requests in the same instant say
/// little about the next second).
const MIN_PACE_SPAN: Duration = Duration::from_millis(1);

/// Leases of at least this size are refilled ahead (see the module docs); smaller ones
/// belong to keys too slow to stall anyone.
const MIN_REFILLED_LEASE: u32 = 4;

/// Above this limit unused entries are not given back but left to expire: giving back
/// searches the log from its newest end, and a log this long can hold many newer runs; the
/// at most [`MAX_LEASE`] entries left are a small part of such a limit, for one window.
const MAX_GIVE_BACK_LIMIT: u32 = 4096;

/// What to ask Redis for on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Entries to reserve, this request's included (at least 1).
    pub want: u32,
    /// How far past Redis' clock the entries are stamped (zero for a single entry).
    pub term: Duration,
    /// Unused entries to give back first: (their stamp, how many).
    pub give_back: Option<(i64, u32)>,
    /// This is the key's one reservation in flight (not a request asking for itself).
    leader: bool,
    /// Sent ahead, for no request: every entry it gets is a slot.
    pub ahead: bool,
}

impl Ask {
    /// This request only, stamped now: the plain exact check.
    pub fn single() -> Self {
        Self {
            want: 1,
            term: Duration::ZERO,
            give_back: None,
            leader: false,
            ahead: false,
        }
    }
}

/// Reserved entries not used yet, all with one stamp.
#[derive(Debug, Clone, Copy)]
struct Batch {
    slots: u32,
    /// Their stamp in the Redis log.
    stamp: i64,
    /// When they stop being usable (the reservation's sending time plus its term).
    usable_until: Instant,
}

/// The local state of one key.
#[derive(Debug)]
pub struct Lease {
    /// Reserved entries not used yet.
    slots: u32,
    /// Their stamp in the Redis log.
    stamp: i64,
    /// When they stop being usable (the reservation's sending time plus its term).
    usable_until: Instant,
    /// How many slots the current lease started with.
    granted: u32,
    /// A lease reserved ahead, used once the current one is spent.
    next: Option<Batch>,
    /// What Redis had left after the reservation (our slots excluded).
    remaining: u32,
    /// When the oldest entry of the log leaves the window.
    reset_at: Instant,
    /// When the last reservation was sent, and whether its slots were all used.
    reserved_at: Option<Instant>,
    /// The size the next reservation asks for.
    want: u32,
    /// A reservation is in flight (others meanwhile ask for themselves only).
    reserving: bool,
    /// Unused entries of earlier reservations, to give back with the next one.
    give_back: Option<(i64, u32)>,
}

impl Default for Lease {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            slots: 0,
            stamp: 0,
            usable_until: now,
            granted: 0,
            next: None,
            remaining: 0,
            reset_at: now,
            reserved_at: None,
            want: 1,
            reserving: false,
            give_back: None,
        }
    }
}

/// A slot taken from a lease: enough to take it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The stamp of the entry the slot stands for.
    pub stamp: i64,
    /// Requests the instance may still admit without asking Redis, and Redis' own remainder.
    pub remaining: u32,
    /// Until the oldest entry leaves the window.
    pub reset: Duration,
}

/// The term of `quota`'s leases: a sixtieth of the window, at most `MAX_TERM`.
pub fn term(quota: Quota) -> Duration {
    (quota.window / 60).min(MAX_TERM)
}

fn cap(quota: Quota) -> u32 {
    if quota.limit < MIN_LEASED_LIMIT {
        1
    } else {
        (quota.limit / 16).min(MAX_LEASE)
    }
}

/// A key's lease as shared by the requests of one instance: the state, and a signal for
/// the requests that wait for a reservation in flight instead of asking Redis themselves
/// (waiting costs at most the round trip they would have made).
#[derive(Debug, Default)]
pub struct LeaseCell {
    state: Mutex<Lease>,
    ready: Notify,
}

impl LeaseCell {
    /// A usable slot (and the reservation to send [`ahead`](Lease::ahead), if it is time),
    /// waiting (at most `wait`) for a reservation in flight if there is none; else what to
    /// ask Redis for (decided under the same lock, so that only one request becomes the
    /// reserving one).
    pub async fn take_or_ask(
        &self,
        quota: Quota,
        wait: Duration,
    ) -> Result<(Taken, Option<Ask>), Ask> {
        let mut deadline = None;
        loop {
            let reserved = {
                let Ok(mut lease) = self.state.lock() else {
                    return Err(Ask::single());
                };
                let now = Instant::now();
                if let Some(taken) = lease.take(now) {
                    let ahead = lease.ahead(quota, now);
                    return Ok((taken, ahead));
                }
                let deadline = *deadline.get_or_insert(now + wait);
                if !lease.reserving || now >= deadline {
                    return Err(lease.ask(quota, now));
                }
                // Registered before the lock is released: the answer cannot slip by.
                (self.ready.notified(), deadline)
            };
            // Others may use up that reservation first; then wait for the next one, until
            // the deadline.
            let (reserved, deadline) = reserved;
            let _ = tokio::time::timeout_at(deadline.into(), reserved).await;
        }
    }

    /// The state, to ask or give back.
    pub fn lock(&self) -> Option<MutexGuard<'_, Lease>> {
        self.state.lock().ok()
    }

    /// Applies a reservation's outcome and wakes the requests waiting for it.
    pub fn settle(&self, outcome: impl FnOnce(&mut Lease)) {
        if let Some(mut lease) = self.lock() {
            outcome(&mut lease);
        }
        self.ready.notify_waiters();
    }
}

impl Lease {
    /// Admits with a reserved slot if one is usable at `now`; else notes the expired
    /// leftovers for giving back and returns `None` (ask Redis).
    pub fn take(&mut self, now: Instant) -> Option<Taken> {
        loop {
            if self.slots > 0 && now < self.usable_until {
                self.slots -= 1;
                let ahead = self
                    .next
                    .filter(|next| now < next.usable_until)
                    .map_or(0, |next| next.slots);
                return Some(Taken {
                    stamp: self.stamp,
                    remaining: self.remaining + self.slots + ahead,
                    reset: self.reset_at.saturating_duration_since(now),
                });
            }
            if self.slots > 0 {
                self.hand_back(self.stamp, self.slots);
                // Not used up within its term: the next one is smaller.
                self.want = self.want.saturating_sub(self.slots).max(1);
                self.slots = 0;
            }
            let next = self.next.take()?;
            self.install(next);
        }
    }

    fn install(&mut self, batch: Batch) {
        self.slots = batch.slots;
        self.stamp = batch.stamp;
        self.usable_until = batch.usable_until;
        self.granted = batch.slots;
    }

    /// After a [`take`](Self::take): the reservation to send ahead, when a busy lease is
    /// down to its last quarter and none is in flight or waiting.
    pub fn ahead(&mut self, quota: Quota, now: Instant) -> Option<Ask> {
        if self.reserving
            || self.next.is_some()
            || self.granted < MIN_REFILLED_LEASE
            || self.slots > self.granted / 4
            || cap(quota) < MIN_REFILLED_LEASE
        {
            return None;
        }
        let ask = self.ask(quota, now);
        Some(Ask {
            // Never a lone entry stamped now: it would expire before it is used.
            want: ask.want.max(MIN_REFILLED_LEASE),
            term: term(quota),
            ahead: true,
            ..ask
        })
    }

    /// Returns a slot taken with [`take`](Self::take) (another policy refused the request).
    pub fn untake(&mut self, taken: Taken, now: Instant) {
        if taken.stamp == self.stamp && now < self.usable_until {
            self.slots += 1;
        } else if let Some(next) = self
            .next
            .as_mut()
            .filter(|next| next.stamp == taken.stamp && now < next.usable_until)
        {
            next.slots += 1;
        } else {
            self.hand_back(taken.stamp, 1);
        }
    }

    fn hand_back(&mut self, stamp: i64, n: u32) {
        self.give_back = match self.give_back {
            Some((s, m)) if s == stamp => Some((s, m + n)),
            // One pending give-back at a time: an older one is left to expire (the limit
            // is only stricter meanwhile).
            _ => Some((stamp, n)),
        };
    }

    /// What to ask Redis for, sent at `now`. Only one request at a time asks for more than
    /// itself.
    pub fn ask(&mut self, quota: Quota, now: Instant) -> Ask {
        let cap = cap(quota);
        let term = term(quota);
        if self.reserving || cap <= 1 {
            return Ask::single();
        }
        match self.reserved_at {
            // Used up within its term: busier than the lease. Enough for a whole term at
            // the pace it was used up at, and at least double.
            Some(at) if now.duration_since(at) <= term => {
                let used_in = now.duration_since(at).max(MIN_PACE_SPAN);
                let pace = u128::from(self.want) * term.as_micros() / used_in.as_micros();
                let pace = u32::try_from(pace).unwrap_or(u32::MAX);
                self.want = pace.max(self.want.saturating_mul(2)).min(cap);
            }
            // Idle longer than a term since: start again from one.
            Some(at) if now.duration_since(at) > term * 2 => self.want = 1,
            _ => {}
        }
        self.reserving = true;
        self.reserved_at = Some(now);
        let want = self.want.clamp(1, cap);
        let give_back = self.give_back.take();
        Ask {
            want,
            term: if want > 1 { term } else { Duration::ZERO },
            give_back: give_back.filter(|_| quota.limit <= MAX_GIVE_BACK_LIMIT),
            leader: true,
            ahead: false,
        }
    }

    /// Installs Redis' answer to `ask` (sent at `sent`): `got` entries stamped `stamp`, one
    /// of them for the asking request unless it was sent [`ahead`](Ask::ahead).
    /// `admitted` false: refused (or not counted).
    #[allow(clippy::too_many_arguments)]
    pub fn answered(
        &mut self,
        ask: Ask,
        sent: Instant,
        admitted: bool,
        got: u32,
        stamp: i64,
        remaining: u32,
        reset: Duration,
    ) {
        if ask.leader {
            self.reserving = false;
        }
        self.remaining = remaining;
        self.reset_at = sent + reset;
        if !admitted {
            self.want = 1;
            return;
        }
        let slots = if ask.ahead {
            got
        } else {
            got.saturating_sub(1)
        };
        if slots == 0 {
            return;
        }
        let batch = Batch {
            slots,
            stamp,
            usable_until: sent + ask.term,
        };
        if self.slots > 0 {
            if ask.ahead && self.next.is_none() && Instant::now() < self.usable_until {
                self.next = Some(batch);
                return;
            }
            // Slots of an earlier reservation, expired or not: given back with the next
            // one rather than tracked under more stamps.
            self.hand_back(self.stamp, self.slots);
        }
        self.install(batch);
    }

    /// A reservation that never got an answer: let the next request try again.
    pub fn failed(&mut self, ask: Ask) {
        if ask.leader {
            self.reserving = false;
            if ask.ahead {
                // Not again for this lease (Redis may be away): the next reservation is
                // the plain one, when the lease is spent.
                self.granted = 0;
            }
            if let Some((stamp, n)) = ask.give_back {
                self.hand_back(stamp, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTA: Quota = Quota {
        limit: 1000,
        window: Duration::from_secs(60),
    };

    /// A lease idle for more than a term, asking for `want` now.
    fn asking(want: u32) -> (Lease, Instant, Ask) {
        let mut lease = Lease::default();
        let now = Instant::now();
        lease.want = want;
        lease.reserved_at = Some(now - Duration::from_millis(1500));
        let ask = lease.ask(QUOTA, now);
        (lease, now, ask)
    }

    #[test]
    fn small_limits_never_lease() {
        let mut lease = Lease::default();
        let quota = Quota {
            limit: 5,
            window: Duration::from_secs(900),
        };
        for _ in 0..10 {
            let now = Instant::now();
            let ask = lease.ask(quota, now);
            assert_eq!(ask.want, 1);
            assert_eq!(ask.term, Duration::ZERO);
            lease.answered(ask, now, true, 1, 7, 3, Duration::from_secs(1));
            assert!(lease.take(now).is_none());
        }
    }

    #[test]
    fn a_busy_key_grows_its_reservations_with_its_pace_up_to_a_sixteenth_of_the_limit() {
        // Each reservation used up in `gap`: sizes after the first single check.
        let sizes = |gap: Duration| {
            let mut lease = Lease::default();
            let mut now = Instant::now();
            let mut sizes = Vec::new();
            for round in 0..8 {
                let ask = lease.ask(QUOTA, now);
                sizes.push(ask.want);
                lease.answered(
                    ask,
                    now,
                    true,
                    ask.want,
                    round,
                    500,
                    Duration::from_secs(60),
                );
                while lease.take(now).is_some() {}
                now += gap;
            }
            sizes
        };
        // Half a term per reservation: doubling.
        assert_eq!(
            sizes(Duration::from_millis(500)),
            [1, 2, 4, 8, 16, 32, 62, 62]
        );
        // A hundred requests a second: a term's worth at once.
        assert_eq!(
            sizes(Duration::from_millis(10)),
            [1, 62, 62, 62, 62, 62, 62, 62]
        );
        // Slower than one request per term: single checks.
        assert_eq!(sizes(Duration::from_millis(2500)), [1; 8]);
    }

    #[test]
    fn slots_expire_with_their_term_and_are_given_back_once() {
        let (mut lease, now, ask) = asking(8);
        assert_eq!((ask.want, ask.term), (8, Duration::from_secs(1)));
        lease.answered(ask, now, true, 8, 42, 900, Duration::from_secs(60));
        let taken = lease.take(now).expect("a reserved slot");
        assert_eq!((taken.stamp, taken.remaining), (42, 906));
        let later = now + Duration::from_millis(1001);
        assert!(lease.take(later).is_none(), "past its term");
        let next = lease.ask(QUOTA, later);
        assert_eq!(next.give_back, Some((42, 6)));
        assert_eq!(next.want, 2, "shrunk by what was not used");
        lease.failed(next);
        assert_eq!(lease.give_back, Some((42, 6)), "kept for the next try");
    }

    #[test]
    fn leftovers_of_very_large_limits_are_left_to_expire() {
        let big = Quota {
            limit: 1_000_000,
            window: Duration::from_secs(60),
        };
        let mut lease = Lease::default();
        let now = Instant::now();
        lease.give_back = Some((42, 6));
        let ask = lease.ask(big, now);
        assert_eq!(ask.give_back, None);
        assert_eq!(lease.give_back, None, "dropped, not kept");
    }

    #[test]
    fn an_untaken_slot_is_reused_or_given_back() {
        let (mut lease, now, ask) = asking(4);
        lease.answered(ask, now, true, 2, 9, 10, Duration::from_secs(60));
        let taken = lease.take(now).expect("slot");
        lease.untake(taken, now);
        assert_eq!(lease.slots, 1);
        let taken = lease.take(now).expect("slot");
        lease.untake(taken, now + Duration::from_secs(2));
        assert_eq!(lease.give_back, Some((9, 1)));
    }

    #[test]
    fn while_one_reserves_the_others_ask_for_themselves() {
        let (mut lease, now, first) = asking(8);
        let second = lease.ask(QUOTA, now);
        assert_eq!((first.want, second.want), (8, 1));
        lease.answered(second, now, true, 1, 5, 10, Duration::from_secs(60));
        assert!(
            lease.reserving,
            "the single check does not end the reservation"
        );
        lease.answered(first, now, false, 0, 5, 0, Duration::from_secs(60));
        assert!(!lease.reserving);
        assert_eq!(lease.want, 1, "refused: back to single checks");
    }

    #[test]
    fn a_busy_lease_reserves_the_next_one_ahead_and_uses_it_after() {
        let (mut lease, now, ask) = asking(8);
        lease.answered(ask, now, true, 9, 1, 100, Duration::from_secs(60));
        let mut aheads = Vec::new();
        for _ in 0..6 {
            lease.take(now).expect("slot");
            aheads.extend(lease.ahead(QUOTA, now));
        }
        assert_eq!(lease.slots, 2);
        assert_eq!(
            aheads.len(),
            1,
            "one reservation ahead, at the last quarter"
        );
        let ahead = aheads[0];
        assert!(ahead.ahead && ahead.want >= 8 && ahead.term == Duration::from_secs(1));
        assert!(
            lease.ahead(QUOTA, now).is_none(),
            "not while it is in flight"
        );
        lease.answered(ahead, now, true, ahead.want, 2, 50, Duration::from_secs(60));
        assert!(!lease.reserving);
        let taken = lease.take(now).expect("slot");
        assert_eq!(taken.stamp, 1, "the current lease first");
        assert_eq!(
            taken.remaining,
            50 + 1 + ahead.want,
            "the next one counts as ours"
        );
        lease.take(now).expect("slot");
        let taken = lease.take(now).expect("slot of the lease reserved ahead");
        assert_eq!(taken.stamp, 2);
        assert_eq!(lease.granted, ahead.want);
        lease.untake(taken, now);
        assert_eq!(lease.slots, ahead.want);
        assert_eq!(lease.give_back, None, "nothing wasted");
    }

    #[test]
    fn a_failed_reservation_ahead_is_not_retried_for_that_lease() {
        let (mut lease, now, ask) = asking(8);
        lease.answered(ask, now, true, 9, 1, 100, Duration::from_secs(60));
        let ahead = std::iter::repeat_with(|| {
            lease.take(now).expect("slot");
            lease.ahead(QUOTA, now)
        })
        .flatten()
        .next()
        .expect("a reservation ahead");
        lease.failed(ahead);
        assert!(lease.take(now).is_some());
        assert!(lease.ahead(QUOTA, now).is_none());
    }

    #[test]
    fn a_new_lease_gives_back_what_the_one_it_replaces_left() {
        let (mut lease, now, ask) = asking(8);
        lease.answered(ask, now, true, 9, 1, 100, Duration::from_secs(60));
        lease.take(now).expect("slot");
        let late = now + Duration::from_secs(2);
        let next = lease.ask(QUOTA, late);
        lease.answered(next, late, true, next.want, 2, 50, Duration::from_secs(60));
        assert_eq!(lease.give_back, Some((1, 7)), "the 7 expired slots go back");
        assert_eq!(lease.stamp, 2);
    }
}
