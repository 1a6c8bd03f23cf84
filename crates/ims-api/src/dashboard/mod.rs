//! `/dashboard`: the organization's key figures (filled in by the dashboard work).

use axum::Router;

use crate::state::AppState;

/// The dashboard routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
