//! The header-read and idle keep-alive time-out, one timer per connection.
//!
//! hyper's own `header_read_timeout` does the same job with a timer per request: every time
//! a connection starts waiting for a request head it reads the clock, boxes a new tokio
//! `Sleep`, inserts it into the runtime's timer wheel (a lock) and removes it again (another
//! lock) when the head is parsed. On a cached hit that was about 1,100 instructions, an
//! allocation and two timer-wheel locks per request (issue 10's profile), for a timer that
//! almost never fires. Here a connection keeps one `Sleep` for its whole life, and each
//! request costs two atomic stores and the clock read hyper made anyway: the service marks
//! the connection busy when a request head has arrived and idle again when its response
//! body is dropped (sent, or abandoned), and the timer, when it wakes, only checks whether
//! the connection has been idle for the whole time-out; if not, it sleeps until it could
//! be. It wakes about once per time-out per connection.
//!
//! "Idle" covers what hyper's timer covered: a new connection that has not sent a whole
//! head, a keep-alive connection waiting for its next request, and a head trickled byte by
//! byte (the clock runs from the end of the previous response, not from the last byte).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// What a connection is doing, shared by its service and its timer.
#[derive(Debug)]
pub struct Activity {
    /// Requests whose response body has not been dropped yet.
    busy: AtomicU32,
    /// When the connection last became idle, in nanoseconds since [`epoch`].
    idle_since: AtomicU64,
}

/// The process's reference instant, so that an instant fits in an atomic.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl Activity {
    /// A connection just accepted: idle from now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(nanos_since_epoch(Instant::now())),
        })
    }

    /// A request head has been read: the time-out no longer runs.
    pub fn begin(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
    }

    /// A response has been sent or abandoned.
    fn end(&self) {
        // The stamp first: the timer reads `busy` and then the stamp, so it never sees an
        // idle connection with the previous request's stamp.
        self.idle_since
            .store(nanos_since_epoch(Instant::now()), Ordering::Relaxed);
        self.busy.fetch_sub(1, Ordering::Release);
    }

    /// When the connection has been idle since, if it is.
    fn idle_since(&self) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let nanos = self.idle_since.load(Ordering::Relaxed);
        Some(epoch() + Duration::from_nanos(nanos))
    }

    /// Completes once the connection has been idle for `timeout` without a break; the
    /// caller then closes it.
    pub async fn idle_for(&self, timeout: Duration) {
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            let now = Instant::now();
            let deadline = match self.idle_since() {
                Some(since) if since + timeout <= now => return,
                Some(since) => since + timeout,
                // Busy: the request time-out bounds the request; look again later.
                None => now + timeout,
            };
            sleep.as_mut().reset(deadline.into());
        }
    }

    /// `body`, reporting the connection idle when it is dropped.
    pub fn track(self: &Arc<Self>, body: Body) -> Tracked {
        Tracked {
            inner: body,
            activity: Arc::clone(self),
        }
    }
}

/// A response body that marks its connection idle when hyper drops it: after its last
/// frame was written, or when the connection ended.
pub struct Tracked {
    inner: Body,
    activity: Arc<Activity>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.end();
    }
}

impl HttpBody for Tracked {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_after_a_whole_idle_time_out_and_not_while_busy() {
        let activity = Activity::new();
        let timeout = Duration::from_millis(200);
        // A request from 100 ms to 500 ms: busy past the first deadline.
        let watch = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.idle_for(timeout).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        activity.begin();
        let body = activity.track(Body::empty());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!watch.is_finished(), "closed while a request ran");
        drop(body);
        let ended = Instant::now();
        watch.await.expect("watch");
        let idle = ended.elapsed();
        assert!(idle >= timeout, "closed after {idle:?} idle");
    }
}
