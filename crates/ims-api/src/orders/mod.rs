//! What sales and purchase orders have in common, written once: their lines
//! ([`lines`]), creating and changing them ([`write`](mod@write): counterpart, warehouse, notes,
//! cancelling, "only open orders change"), reading them, and completing them (fulfilment,
//! receipt). Each kind of order is its row type implementing [`OrderType`], described by
//! an [`OrderKind`]; the modules `sales` and `purchasing` keep only what differs (prices
//! and tax against costs, their tables and columns, their routes).

pub mod lines;
pub mod write;

pub use write::{create, patch, NewOrder, OrderPatch, OrderType, Refs};

use sqlx::AnyConnection;

use crate::auth::Org;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::fields::{self, Table};
use crate::inventory::stock::{self, Movement, Source};
use crate::owned::Row;
use crate::status::Status;

/// Longest order note, in characters.
pub const MAX_NOTES_CHARS: usize = 2000;

/// What differs between the kinds of order where their rules are shared.
#[derive(Debug, Clone, Copy)]
pub struct OrderKind {
    /// The order's name in messages: `sales order`.
    pub noun: &'static str,
    /// The counterpart's field (`customerId`) and table.
    pub party: (&'static str, Table),
    /// How an open order is completed, for the message refusing any other status change
    /// (`fulfil with POST /sales-orders/{id}/fulfil`).
    pub completion: &'static str,
    /// The orders' table and the columns of a row.
    pub table: (&'static str, &'static str),
    /// The lines' table, their order-id column and the columns of a line.
    pub lines: (&'static str, &'static str, &'static str),
    /// The documents billed on an order, as the query of one's number (`$1` the
    /// organization, `$2` the order): once billed, an order keeps the counterpart,
    /// warehouse and lines it was billed for, and is no longer cancelled.
    pub billed_by: Option<&'static str>,
}

/// A sales order: sold to a customer, fulfilled.
pub const SALES: OrderKind = OrderKind {
    noun: "sales order",
    party: ("customerId", Table::Customers),
    completion: "fulfil with POST /sales-orders/{id}/fulfil",
    table: (
        "sales_orders",
        "id, customer_id, warehouse_id, status, notes, subtotal_cents, tax_cents, total_cents, \
         fulfilled_at, created_at, updated_at",
    ),
    lines: (
        "sales_order_lines",
        "sales_order_id",
        "id, item_id, quantity, unit_price_cents, tax_rate_bps, subtotal_cents, tax_cents, \
         total_cents",
    ),
    billed_by: Some(
        "SELECT number FROM invoices WHERE organization_id = $1 AND sales_order_id = $2",
    ),
};

/// A purchase order: bought from a vendor, received.
pub const PURCHASE: OrderKind = OrderKind {
    noun: "purchase order",
    party: ("vendorId", Table::Vendors),
    completion: "receive with POST /purchase-orders/{id}/receive",
    table: (
        "purchase_orders",
        "id, vendor_id, warehouse_id, status, notes, total_cents, received_at, created_at, \
         updated_at",
    ),
    lines: (
        "purchase_order_lines",
        "purchase_order_id",
        "id, item_id, quantity, unit_cost_cents, total_cents",
    ),
    billed_by: None,
};

/// The fields of an order row that the shared part of a PATCH changes.
pub trait Editable {
    /// The kind's status.
    type Status: Status + PartialEq + std::fmt::Display;
    /// An order that may still change.
    const OPEN: Self::Status;
    /// What `status: "cancelled"` sets.
    const CANCELLED: Self::Status;
    /// The status, counterpart, warehouse and notes, to change in place.
    fn editable(
        &mut self,
    ) -> (
        &mut Self::Status,
        &mut String,
        &mut String,
        &mut Option<String>,
    );
}

/// The caller's order `id` of kind `O` with its lines in order; 404 when there is none.
pub async fn read<O: OrderType>(db: &Db, org_id: &str, id: &str) -> ApiResult<(O, Vec<O::Line>)> {
    let mut conn = db.pool().acquire().await?;
    load(&mut conn, O::KIND, org_id, id).await
}

/// The caller's order `id` of `kind` with its lines in order; 404 when there is none.
async fn load<O: Row, L: Row>(
    conn: &mut AnyConnection,
    kind: OrderKind,
    org_id: &str,
    id: &str,
) -> ApiResult<(O, Vec<L>)> {
    let (table, columns) = kind.table;
    let order: O = sqlx::query_as(&format!(
        "SELECT {columns} FROM {table} WHERE organization_id = $1 AND id = $2"
    ))
    .bind(org_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| fields::not_found(kind.noun))?;
    let (lines, order_id, columns) = kind.lines;
    let lines = sqlx::query_as(&format!(
        "SELECT {columns} FROM {lines} WHERE {order_id} = $1 AND organization_id = $2 \
         ORDER BY line_no"
    ))
    .bind(id)
    .bind(org_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok((order, lines))
}

/// Removes the lines of the caller's order `id` of `kind` (a PATCH replacing them).
async fn delete_lines(
    conn: &mut AnyConnection,
    kind: OrderKind,
    org_id: &str,
    id: &str,
) -> ApiResult<()> {
    let (lines, order_id, _) = kind.lines;
    sqlx::query(&format!(
        "DELETE FROM {lines} WHERE {order_id} = $1 AND organization_id = $2"
    ))
    .bind(id)
    .bind(org_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A line as a completion moves its stock.
pub trait Quantity {
    /// The line's item and quantity.
    fn item_and_quantity(&self) -> (&str, i64);
}

/// How a kind of order is completed (fulfilled, received).
pub struct Completion<S> {
    /// The status a completed order gets.
    pub done: S,
    /// The column stamped with the time of completion (`fulfilled_at`).
    pub stamped: &'static str,
    /// The refusal's verb: "only open orders can be {verb}".
    pub verb: &'static str,
    /// -1: the lines' stock goes out of the order's warehouse; 1: it comes in.
    pub direction: i64,
    /// The stock movements' source.
    pub source: Source,
}

/// Completes the caller's order `id` of kind `O`: marks it done and moves every line's stock
/// (all or nothing, one movement per item), in one transaction whose first write is the
/// status change, conditional on the order being open. A second completion is therefore a
/// 409 naming the status, never a second movement.
pub async fn complete<O: OrderType>(org: &Org, id: &str) -> ApiResult<(O, Vec<O::Line>)> {
    let (kind, how) = (O::KIND, O::COMPLETION);
    let now = crate::db::now();
    let mut tx = org.db.begin_write().await?;
    let claimed = sqlx::query(&format!(
        "UPDATE {} SET status = $4, {} = $1, updated_at = $1
         WHERE organization_id = $2 AND id = $3 AND status = $5",
        kind.table.0, how.stamped
    ))
    .bind(&now)
    .bind(&org.id)
    .bind(id)
    .bind(how.done.as_str())
    .bind(O::OPEN.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let (mut order, lines): (O, Vec<O::Line>) = load(&mut tx, kind, &org.id, id).await?;
    let (status, _, warehouse, _) = order.editable();
    if claimed == 0 {
        return Err(ApiError::Conflict(format!(
            "the order is {status}; only open orders can be {}",
            how.verb
        )));
    }
    let warehouse = warehouse.clone();
    let per_item = lines::quantities_by_item(lines.iter().map(Quantity::item_and_quantity));
    for (item_id, quantity) in per_item {
        let movement = Movement {
            org_id: &org.id,
            item_id,
            warehouse_id: &warehouse,
            delta: how.direction * quantity,
            source: how.source,
            source_id: id,
            reason: None,
            user_id: Some(&org.user_id),
        };
        stock::apply(&mut tx, &movement).await?;
    }
    tx.commit().await?;
    Ok((order, lines))
}

/// Only an open order changes; any other is history (409).
fn ensure_open<S: Status + PartialEq + std::fmt::Display>(status: S, open: S) -> ApiResult<()> {
    if status == open {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "the order is {status}; only open orders can change"
        )))
    }
}
