//! [`InvalidateLayer`]: after a successful write, delete the caller's cached responses of
//! the given groups, before the response leaves.
//!
//! Invalidation happens inside the request, so once a client has the write's response no
//! later read of that scope can be answered from an older entry. Reads (`GET`, `HEAD`,
//! `OPTIONS`) and failed writes (non-2xx) invalidate nothing. Requests without a scope or
//! without a [`ResponseCache`] extension pass through untouched. If Redis cannot be asked
//! the response is still sent; the cache is flushed when Redis comes back.
//!
//! # Not losing an invalidation
//! The in-request invalidation is lost if the instance dies between the write and the
//! invalidation, or cannot reach Redis while others can. An application can close that gap
//! with an [`InvalidationJournal`] in the request's extensions (a durable outbox), so that
//! a committed write always has a record. The best place for the record is the write's own
//! transaction (one commit, and a record is visible only once its write is): a journal that
//! says so ([`InvalidationJournal::records_in_write`]) gets a [`PendingInvalidation`] that
//! the application's transaction code finds with [`pending`] while the handler runs.
//! Otherwise the layer records the invalidation *before* the write runs, in its own commit.
//! Either way the layer marks the record done once Redis has applied it; whatever is not
//! done, the application re-applies from the journal (on any instance).
//!
//! # Example
//! ```
//! use ims_redis::invalidate::InvalidateLayer;
//!
//! // A new comment changes the post, its like counts and the feed.
//! let layer = InvalidateLayer::new(&["likes", "posts", "feed"]);
//! assert_eq!(layer.groups(), ["likes", "posts", "feed"]);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, Response};
use tower::{Layer, Service};

use crate::cache::{last_segment_tag, tag_name, ResponseCache};

/// What [`InvalidationJournal`]'s methods return.
pub type JournalFuture<'a, T> = BoxFuture<'a, T>;

/// A durable record of invalidations (an outbox), kept by the application, e.g. in SQL.
pub trait InvalidationJournal: Send + Sync {
    /// True when the application records invalidations inside the write's own transaction
    /// (it calls [`pending`] when it opens one and marks the record with
    /// [`PendingInvalidation::mark_recorded`]); then [`Self::record`] is only the fallback
    /// for a successful write that opened no such transaction.
    fn records_in_write(&self) -> bool {
        false
    }

    /// Records that `groups` of `scope` are about to be written; returns the record's id,
    /// or `None` if it could not be recorded (the write then proceeds without it).
    fn record<'a>(&'a self, scope: &'a str, groups: &'a [String]) -> BoxFuture<'a, Option<String>>;

    /// The write succeeded and Redis has not been told yet (a fault point for tests).
    fn committed<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// The record is applied (or its write failed before changing anything): it needs no
    /// re-applying. Called on the request path, so it should only note the id and leave
    /// its own I/O for later (the SQL outbox marks ids done in batches).
    fn done<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()>;
}

/// The journal as found in request extensions.
pub type Journal = Arc<dyn InvalidationJournal>;

/// The invalidation a write that is running will need, for a journal that records it in
/// the write's own transaction.
#[derive(Debug)]
pub struct PendingInvalidation {
    id: String,
    scope: String,
    groups: Arc<[String]>,
    recorded: AtomicBool,
}

impl PendingInvalidation {
    /// The record's id (random, 128 bits as hex).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The scope (e.g. the organization) whose entries the write invalidates.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The groups the write invalidates.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// Claims the recording: true the first time (the caller then writes the record in its
    /// transaction), false afterwards, so a second transaction of the same request does
    /// not write it twice.
    pub fn mark_recorded(&self) -> bool {
        !self.recorded.swap(true, Ordering::AcqRel)
    }

    fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }
}

/// A record id: microseconds since the Unix epoch, then random bits (32 hex digits in
/// all), so that ids sort by time and a table keyed by them grows at one end.
/// A new outbox record id: 16 hex digits of the writer's clock in microseconds since the
/// Unix epoch, then 16 random ones. Ids sort by time as text, so a journal can find the
/// records older than a moment by comparing with [`record_id_cutoff`], on its primary key
/// alone (no second index to write on every write).
pub fn record_id() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!("{micros:016x}{:016x}", rand::random::<u64>())
}

/// The id below which every record was made before `moment` (see [`record_id`]).
pub fn record_id_cutoff(moment: std::time::SystemTime) -> String {
    let micros = moment
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    format!("{micros:016x}")
}

tokio::task_local! {
    static PENDING: Arc<PendingInvalidation>;
}

/// The invalidation pending for the write the current task is running, if its
/// [`InvalidateLayer`] has a journal that records in the write's transaction. The task is
/// the request's: work spawned onto other tasks does not see it.
pub fn pending() -> Option<Arc<PendingInvalidation>> {
    PENDING.try_with(Arc::clone).ok()
}

/// Invalidates cache groups (key-prefix first segments, e.g. `posts`), single key prefixes
/// (`posts:list`) and, optionally, the written entity's tag after a 2xx write.
#[derive(Debug, Clone)]
pub struct InvalidateLayer {
    groups: Arc<[String]>,
    tag_by_last_segment: Option<Arc<str>>,
}

impl InvalidateLayer {
    /// Invalidates `groups`: a group (`posts`) drops all its entries, a full key prefix
    /// (`posts:list`) only that kind of read.
    pub fn new(groups: &[&str]) -> Self {
        Self {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            tag_by_last_segment: None,
        }
    }

    /// Also invalidates the written entity's tag, `{name}:{last path segment}`, the tag a
    /// [`CacheLayer::tag_by_last_segment`](crate::cache::CacheLayer::tag_by_last_segment)
    /// read carries: `PATCH /posts/42` with `post` drops the entries of `post:42` and no
    /// other post's.
    pub fn tag_by_last_segment(mut self, name: &str) -> Self {
        self.tag_by_last_segment = Some(name.into());
        self
    }

    /// The groups (and key prefixes) this layer invalidates.
    pub fn groups(&self) -> Vec<&str> {
        self.groups.iter().map(String::as_str).collect()
    }
}

impl<S> Layer<S> for InvalidateLayer {
    type Service = InvalidateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InvalidateService {
            inner,
            groups: self.groups.clone(),
            tag_by_last_segment: self.tag_by_last_segment.clone(),
        }
    }
}

/// Marks `record` done (cheap by the journal's contract; a record left undone only costs
/// a redundant invalidation later).
async fn mark_done(journal: Option<Journal>, record: Option<String>) {
    if let (Some(journal), Some(id)) = (journal, record) {
        journal.done(&id).await;
    }
}

/// The service produced by [`InvalidateLayer`].
#[derive(Debug, Clone)]
pub struct InvalidateService<S> {
    inner: S,
    groups: Arc<[String]>,
    tag_by_last_segment: Option<Arc<str>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for InvalidateService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut groups: Vec<String> = self.groups.to_vec();
        if let Some(name) = &self.tag_by_last_segment {
            groups.push(tag_name(&last_segment_tag(name, request.uri().path())));
        }
        let groups: Arc<[String]> = groups.into();
        let is_read = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        let cache = request.extensions().get::<Arc<ResponseCache>>().cloned();
        let journal = request.extensions().get::<Journal>().cloned();
        let target = match cache {
            Some(cache) if !is_read => {
                let (parts, body) = request.into_parts();
                let scope = cache.scope_of(&parts);
                let request = Request::from_parts(parts, body);
                (scope.map(|scope| (cache, scope)), request)
            }
            _ => (None, request),
        };
        Box::pin(async move {
            let (target, request) = target;
            let Some((cache, scope)) = target else {
                return inner.call(request).await;
            };
            let in_write = journal.as_ref().is_some_and(|j| j.records_in_write());
            let (response, record) = if in_write {
                let pending = Arc::new(PendingInvalidation {
                    id: record_id(),
                    scope: scope.clone(),
                    groups: groups.clone(),
                    recorded: AtomicBool::new(false),
                });
                let response = PENDING.scope(pending.clone(), inner.call(request)).await?;
                let mut record = pending.is_recorded().then(|| pending.id.clone());
                if response.status().is_success() && record.is_none() {
                    // The handler wrote without opening a recording transaction: a defect
                    // (tests run with debug assertions); record late rather than never.
                    tracing::error!("a successful write recorded no invalidation");
                    if cfg!(debug_assertions) {
                        panic!("a successful write recorded no invalidation");
                    }
                    if let Some(journal) = &journal {
                        record = journal.record(&scope, &groups).await;
                    }
                }
                (response, record)
            } else {
                // Recorded before the write: once the write has committed, so has its record.
                let record = match &journal {
                    Some(journal) => journal.record(&scope, &groups).await,
                    None => None,
                };
                (inner.call(request).await?, record)
            };
            let status = response.status();
            if status.is_success() {
                if let (Some(journal), Some(id)) = (&journal, &record) {
                    journal.committed(id).await;
                }
                let names: Vec<&str> = groups.iter().map(String::as_str).collect();
                let applied = cache.invalidate(&scope, &names).await.is_some();
                if applied {
                    mark_done(journal, record).await;
                }
            } else if status.is_client_error() {
                // Refused before writing anything; a 5xx may have committed, so its record
                // stays for the journal's re-application.
                mark_done(journal, record).await;
            }
            Ok(response)
        })
    }
}
