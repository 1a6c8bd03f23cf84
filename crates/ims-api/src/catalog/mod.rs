//! The catalog's reference data: categories (a tree), tax rates and warehouses.
//!
//! Each is a plain organization-scoped resource with list, create, read, replace, patch and
//! delete. Rows that others refer to (a category with children or items, a tax rate used by
//! items, a warehouse holding stock) cannot be deleted: the database's foreign keys refuse,
//! and the API answers 409.

mod categories;
mod tax_rates;
mod warehouses;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// `/categories`, `/tax-rates` and `/warehouses`.
pub fn router() -> OpenApiRouter<AppState> {
    crate::openapi::tagged(
        "catalog",
        OpenApiRouter::new()
            .merge(categories::router())
            .merge(tax_rates::router())
            .merge(warehouses::router()),
    )
}
