//! The only code that changes stock levels. Every change is a conditional, single-statement
//! update inside the caller's transaction, plus a ledger row, so concurrent requests can
//! never drive a level below zero and the ledger always sums to the levels.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::db;
use crate::error::{ApiError, ApiResult};
use crate::fields;
use crate::money::MAX_STOCK;

/// What caused a movement; stored in the ledger's `source` column.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A manual adjustment.
    Adjustment,
    /// One side of a transfer between warehouses.
    Transfer,
    /// A fulfilled sales order.
    Sale,
    /// A received purchase order.
    Purchase,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Adjustment => "adjustment",
            Self::Transfer => "transfer",
            Self::Sale => "sale",
            Self::Purchase => "purchase",
        }
    }
}

/// One change of one (item, warehouse) level.
pub struct Movement<'a> {
    pub org_id: &'a str,
    pub item_id: &'a str,
    pub warehouse_id: &'a str,
    /// Positive puts stock in, negative takes it out.
    pub delta: i64,
    pub source: Source,
    pub source_id: &'a str,
    pub reason: Option<&'a str>,
    pub user_id: Option<&'a str>,
}

/// Applies `movement` and records it. Taking out more than is there is a 409 naming the
/// item, and so is an item or warehouse deleted since the caller checked it (the level's or
/// the ledger's foreign key; a 500 before, found by a probe racing adjustments with
/// deletes); the caller's transaction must then be rolled back (dropping it does that).
pub async fn apply(conn: &mut AnyConnection, movement: &Movement<'_>) -> ApiResult<()> {
    let now = db::now();
    if movement.delta < 0 {
        let wanted = -movement.delta;
        // The condition and the decrement are one statement: two concurrent takes cannot
        // both see enough stock.
        let taken = sqlx::query(
            "UPDATE stock_levels SET quantity = quantity - $1, updated_at = $2
             WHERE organization_id = $3 AND item_id = $4 AND warehouse_id = $5 AND quantity >= $1",
        )
        .bind(wanted)
        .bind(&now)
        .bind(movement.org_id)
        .bind(movement.item_id)
        .bind(movement.warehouse_id)
        .execute(&mut *conn)
        .await
        .map_err(fields::reference_gone)?
        .rows_affected();
        if taken == 0 {
            let available: Option<i64> = sqlx::query_scalar(
                "SELECT quantity FROM stock_levels
                 WHERE organization_id = $1 AND item_id = $2 AND warehouse_id = $3",
            )
            .bind(movement.org_id)
            .bind(movement.item_id)
            .bind(movement.warehouse_id)
            .fetch_optional(&mut *conn)
            .await?;
            return Err(ApiError::Conflict(format!(
                "insufficient stock of item {} in warehouse {}: {} available, {wanted} needed",
                movement.item_id,
                movement.warehouse_id,
                available.unwrap_or(0)
            )));
        }
    } else {
        // The bound is part of the statement for the same reason as the decrement's
        // condition; a level can never pass it, so `quantity + $4` never overflows.
        let put = sqlx::query(
            "INSERT INTO stock_levels (organization_id, item_id, warehouse_id, quantity, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (item_id, warehouse_id)
             DO UPDATE SET quantity = stock_levels.quantity + excluded.quantity, updated_at = excluded.updated_at
             WHERE stock_levels.quantity <= $6 - excluded.quantity",
        )
        .bind(movement.org_id)
        .bind(movement.item_id)
        .bind(movement.warehouse_id)
        .bind(movement.delta)
        .bind(&now)
        .bind(MAX_STOCK)
        .execute(&mut *conn)
        .await
        .map_err(fields::reference_gone)?
        .rows_affected();
        if put == 0 {
            return Err(ApiError::Conflict(format!(
                "stock of item {} in warehouse {} would exceed the largest level of {MAX_STOCK}",
                movement.item_id, movement.warehouse_id
            )));
        }
    }
    sqlx::query(
        "INSERT INTO stock_movements
           (id, organization_id, item_id, warehouse_id, quantity_delta, source, source_id, reason, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(movement.org_id)
    .bind(movement.item_id)
    .bind(movement.warehouse_id)
    .bind(movement.delta)
    .bind(movement.source.as_str())
    .bind(movement.source_id)
    .bind(movement.reason)
    .bind(movement.user_id)
    .bind(&now)
    .execute(&mut *conn)
    .await
    .map_err(fields::reference_gone)?;
    Ok(())
}
