//! `GET /openapi.json` and `GET /docs` (filled in by the OpenAPI work).

use axum::Router;

use crate::state::AppState;

/// The API description routes.
pub fn router() -> Router<AppState> {
    Router::new()
}
