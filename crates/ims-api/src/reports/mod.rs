//! `/reports/{type}`: date-ranged aggregate reports (filled in by the reports work).

use axum::Router;

use crate::state::AppState;

/// The report routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
