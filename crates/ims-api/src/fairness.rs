//! Each organization's share of the database for the expensive reads (dashboards and
//! reports, on a cache miss). One tenant's heavy reports could take every pooled
//! connection, and every other tenant's requests then waited the pool's two seconds for
//! one and got a 503 (probe 24). Now an organization runs at most half the pool's worth of
//! these handlers at once; the rest of its expensive reads wait behind its own, within the
//! request time-out, and the other half of the pool stays free for everyone else. However
//! many organizations run them at once, a quarter of the pool (at least one connection)
//! stays free of expensive reads, for every cheap route of every organization.
//!
//! A slot is held for as long as its handler uses the database, not as long as its client
//! waits: a request given up (its client gone, or its time-out passed) left its query
//! running on its connection until PostgreSQL's statement time-out, while its slot let
//! another report take one more connection, and four given-up reports filled a pool of four
//! (a black-box probe). So the expensive routes also [`RunToEnd`]: their handler runs in a
//! task of its own, which a dropped request does not cancel.
//!
//! Written by hand: tower's `ConcurrencyLimit` has one limit for all callers, not one per
//! key, and a route layer has no state to find the organization's limit in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use std::future::Future;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::around::Around;

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::state::AppState;

/// Above this many organizations remembered, entries no request holds are dropped.
const PRUNE_ABOVE: usize = 1024;

/// The organizations' shares: one semaphore per organization with expensive reads running
/// or waiting, dropped when none are.
#[derive(Debug)]
pub struct TenantShares {
    share: usize,
    live: Mutex<HashMap<String, Weak<Semaphore>>>,
    /// All organizations' expensive reads together: the pool less a quarter.
    all: Arc<Semaphore>,
    together: usize,
}

impl TenantShares {
    /// Shares of a pool of `pool_size` connections: half of it each, at least one, and
    /// three quarters of it for all together, at least one.
    pub fn new(pool_size: u32) -> Self {
        // Shown from the start, so that a dashboard can tell "never waited" from "unknown".
        metrics::counter!("ims_tenant_share_waits_total").increment(0);
        let pool = pool_size as usize;
        let all = pool.saturating_sub((pool / 4).max(1)).max(1);
        Self {
            share: (pool / 2).clamp(1, all),
            live: Mutex::new(HashMap::new()),
            all: Arc::new(Semaphore::new(all)),
            together: all,
        }
    }

    /// How many expensive reads one organization may run at once.
    pub fn share(&self) -> usize {
        self.share
    }

    /// A slot of `org`'s share and of everyone's, once both are free (the organization's
    /// first, so that one organization's queue waits on its own share and takes no more than
    /// one place in the common queue at a time); `None` only if a semaphore was closed, which
    /// nothing does.
    pub async fn enter(&self, org: &str) -> Option<Slot> {
        let own = self.semaphore(org)?;
        // Counted when the wait starts: a pile-up shows while it lasts, and a request given
        // up while it waits is counted too (both were missing, a probe).
        let mut counted = false;
        let mut count = || {
            if !std::mem::replace(&mut counted, true) {
                metrics::counter!("ims_tenant_share_waits_total").increment(1);
            }
        };
        let own = match own.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                count();
                own.acquire_owned().await.ok()?
            }
        };
        let all = match self.all.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                count();
                self.all.clone().acquire_owned().await.ok()?
            }
        };
        Some(Slot {
            _own: own,
            _all: all,
        })
    }

    /// How many expensive reads all organizations together may run at once.
    pub fn all(&self) -> usize {
        self.together
    }

    fn semaphore(&self, org: &str) -> Option<Arc<Semaphore>> {
        let mut live = self.live.lock().ok()?;
        if let Some(semaphore) = live.get(org).and_then(Weak::upgrade) {
            return Some(semaphore);
        }
        if live.len() >= PRUNE_ABOVE {
            live.retain(|_, semaphore| semaphore.strong_count() > 0);
        }
        let semaphore = Arc::new(Semaphore::new(self.share));
        live.insert(org.to_string(), Arc::downgrade(&semaphore));
        Some(semaphore)
    }
}

/// A slot held in an organization's share and in everyone's.
#[derive(Debug)]
pub struct Slot {
    _own: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

/// A slot of the caller's organization's share of the database: an expensive read's
/// handler takes it after the caller's token (list it after [`AuthUser`]) and holds it
/// while it runs. Only misses get here: a cached answer never runs the handler.
pub struct TenantSlot {
    _held: Slot,
}

impl FromRequestParts<AppState> for TenantSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let given_up = parts.extensions.get::<GivenUp>().cloned();
        let slot = state.tenant_shares.enter(&user.org_id);
        let held = match given_up {
            Some(given_up) => tokio::select! {
                held = slot => held,
                () = given_up.given_up() => {
                    return Err(ApiError::Internal(anyhow::anyhow!(
                        "given up while waiting for the organization's share"
                    )))
                }
            },
            None => slot.await,
        };
        held.map(|held| TenantSlot { _held: held }).ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("the organization's share is closed"))
        })
    }
}

/// Runs the inner service (a route's extractors and handler) in a task of its own, to its
/// end, however early the request is dropped: what it holds (a slot of a share, a pooled
/// connection) is given back when its work is done, not while its query still runs. The
/// answer of a dropped request is dropped. A panic is a 500, as the edge's catcher makes it.
/// Attach it as `AroundLayer(RunToEnd)` (`RoutePolicy::runs_to_end`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunToEnd;

/// Resolves once the request that [`RunToEnd`] runs has been given up.
#[derive(Clone, Debug)]
struct GivenUp(tokio::sync::watch::Receiver<()>);

impl GivenUp {
    async fn given_up(mut self) {
        // Nothing is ever sent: this ends when the sender is dropped.
        while self.0.changed().await.is_ok() {}
    }
}

impl Around for RunToEnd {
    /// Held by the answer's future: dropped with it when the request is given up, which ends
    /// a wait for a slot (a given-up request has no database work to finish yet).
    type Carry = tokio::sync::watch::Sender<()>;

    fn before(&self, request: &mut Request) -> Self::Carry {
        let (given_up, watch) = tokio::sync::watch::channel(());
        request.extensions_mut().insert(GivenUp(watch));
        given_up
    }

    async fn after<F>(given_up: Self::Carry, response: F) -> Response
    where
        F: Future<Output = Response> + Send + 'static,
    {
        let task = tokio::spawn(response);
        let _given_up = given_up;
        match task.await {
            Ok(response) => response,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => crate::error::panicked(panic),
                Err(e) => ApiError::Internal(anyhow::anyhow!("handler task: {e}")).into_response(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service};

    use super::*;
    use crate::around::AroundLayer;

    #[test]
    fn half_the_pool_each_three_quarters_in_all_and_at_least_one() {
        let shares = |pool| {
            let shares = TenantShares::new(pool);
            (shares.share(), shares.all())
        };
        assert_eq!(shares(16), (8, 12));
        assert_eq!(shares(8), (4, 6));
        assert_eq!(shares(4), (2, 3));
        assert_eq!(shares(3), (1, 2));
        assert_eq!(shares(2), (1, 1));
        assert_eq!(shares(1), (1, 1));
    }

    #[tokio::test]
    async fn all_organizations_together_leave_a_quarter_of_the_pool() {
        let shares = TenantShares::new(4);
        let held = [
            shares.enter("a").await,
            shares.enter("a").await,
            shares.enter("b").await,
        ];
        assert!(held.iter().all(Option::is_some));
        let fourth = shares.enter("c");
        tokio::pin!(fourth);
        assert!(futures::FutureExt::now_or_never(fourth.as_mut()).is_none());
        drop(held);
        assert!(fourth.await.is_some());
    }

    #[tokio::test]
    async fn one_organization_waits_behind_its_own_share_only() {
        let shares = TenantShares::new(4);
        let a = (shares.enter("a").await, shares.enter("a").await);
        assert!(a.0.is_some() && a.1.is_some());
        // A third of a's waits; b's goes ahead.
        let third = shares.enter("a");
        tokio::pin!(third);
        assert!(futures::FutureExt::now_or_never(third.as_mut()).is_none());
        assert!(shares.enter("b").await.is_some());
        drop(a);
        assert!(third.await.is_some());
    }

    /// A handler that reports whether it saw its request given up, and finishes once told.
    fn watched_handler(
        finish: tokio::sync::oneshot::Receiver<()>,
        done: tokio::sync::oneshot::Sender<bool>,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future = impl Send> + Clone
    {
        let slot = Arc::new(Mutex::new(Some((finish, done))));
        tower::service_fn(move |request: Request| {
            let slot = slot.clone();
            async move {
                let (finish, done) = slot.lock().expect("lock").take().expect("one call");
                let given_up = request.extensions().get::<GivenUp>().cloned();
                let _ = finish.await;
                let seen = match given_up {
                    Some(given_up) => {
                        futures::FutureExt::now_or_never(given_up.given_up()).is_some()
                    }
                    None => false,
                };
                let _ = done.send(seen);
                Ok::<_, Infallible>(Response::new(axum::body::Body::empty()))
            }
        })
    }

    #[tokio::test]
    async fn a_given_up_request_runs_to_its_end_and_knows_it() {
        let (finish_tx, finish) = tokio::sync::oneshot::channel();
        let (done, done_rx) = tokio::sync::oneshot::channel();
        let mut service = AroundLayer(RunToEnd).layer(watched_handler(finish, done));
        let mut answer = service.call(Request::new(axum::body::Body::empty()));
        // Waited for a while, then the client went away, or the time-out passed.
        assert!(futures::FutureExt::now_or_never(&mut answer).is_none());
        drop(answer);
        let _ = finish_tx.send(());
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), done_rx)
            .await
            .expect("the handler ran to its end")
            .expect("it reported");
        assert!(seen, "and saw its request given up");
    }

    #[tokio::test]
    async fn an_answered_request_is_not_given_up() {
        let (finish_tx, finish) = tokio::sync::oneshot::channel();
        let (done, done_rx) = tokio::sync::oneshot::channel();
        let mut service = AroundLayer(RunToEnd).layer(watched_handler(finish, done));
        let answer = service.call(Request::new(axum::body::Body::empty()));
        let _ = finish_tx.send(());
        assert!(answer.await.is_ok());
        assert!(!done_rx.await.expect("it reported"));
    }

    #[tokio::test]
    async fn a_share_nobody_holds_is_forgotten() {
        let shares = TenantShares::new(2);
        for org in 0..(PRUNE_ABOVE + 10) {
            drop(shares.enter(&org.to_string()).await);
        }
        let live = shares.live.lock().expect("lock").len();
        assert!(live <= PRUNE_ABOVE, "{live}");
    }
}
