//! What sales and purchase orders have in common, written once: their lines
//! ([`lines`]), the rules of a new order's and a change's counterpart, warehouse and notes,
//! cancelling, and "only open orders change". Each kind of order is described by an
//! [`OrderKind`]; the modules `sales` and `purchasing` keep only what differs (prices and
//! tax against costs, fulfilment against receipt, their tables).

pub mod lines;

use sqlx::AnyConnection;

use crate::auth::AuthUser;
use crate::db::Db;
use crate::error::{ApiError, ApiResult, Validator};
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
};

/// The new value of a PATCH field that cannot be null: `None` when absent (unchanged).
pub fn changed<T>(patched: Option<Option<T>>, field: &str, v: &mut Validator) -> Option<T> {
    fields::merge_required(patched.map(|p| p.map(Some)), None, field, v)
}

/// The counterpart and warehouse of a new order, validated and checked to exist in the
/// caller's organization, and its notes.
pub async fn new_order_refs(
    db: &Db,
    org_id: &str,
    kind: OrderKind,
    party: String,
    warehouse: String,
    notes: Option<String>,
    v: &mut Validator,
) -> ApiResult<(Option<String>, Option<String>, Option<String>)> {
    let party = fields::reference(Some(party), kind.party.0, v);
    let warehouse = fields::reference(Some(warehouse), "warehouseId", v);
    let notes = fields::optional_text(notes, "notes", MAX_NOTES_CHARS, v);
    check_refs(db, org_id, kind, party.as_deref(), warehouse.as_deref(), v).await?;
    Ok((party, warehouse, notes))
}

/// The shared part of an order's PATCH, validated: whether it cancels, and the new
/// counterpart, warehouse and notes (each `None` when unchanged).
#[derive(Debug, Default)]
pub struct Changes {
    /// `status: "cancelled"` was asked.
    pub cancel: bool,
    /// The new counterpart.
    pub party: Option<String>,
    /// The new warehouse.
    pub warehouse: Option<String>,
    /// The new notes (`Some(None)`: cleared).
    pub notes: Option<Option<String>>,
}

impl Changes {
    /// Reads a PATCH's `status`, counterpart, `warehouseId` and `notes` (errors into `v`)
    /// and checks the references exist in the caller's organization.
    #[allow(clippy::too_many_arguments)]
    pub async fn parse(
        db: &Db,
        org_id: &str,
        kind: OrderKind,
        status: Option<Option<String>>,
        party: Option<Option<String>>,
        warehouse: Option<Option<String>>,
        notes: Option<Option<String>>,
        v: &mut Validator,
    ) -> ApiResult<Self> {
        let cancel = match status {
            None => false,
            Some(Some(s)) if s == "cancelled" => true,
            Some(_) => {
                v.check(
                    false,
                    "status",
                    &format!("can only be set to cancelled ({})", kind.completion),
                );
                false
            }
        };
        let party = changed(party, kind.party.0, v)
            .and_then(|p| fields::reference(Some(p), kind.party.0, v));
        let warehouse = changed(warehouse, "warehouseId", v)
            .and_then(|w| fields::reference(Some(w), "warehouseId", v));
        let notes = notes.map(|n| fields::optional_text(n, "notes", MAX_NOTES_CHARS, v));
        check_refs(db, org_id, kind, party.as_deref(), warehouse.as_deref(), v).await?;
        Ok(Self {
            cancel,
            party,
            warehouse,
            notes,
        })
    }
}

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

impl Changes {
    /// Applies the changes to `order`, which must be open (409 otherwise).
    pub fn apply<O: Editable>(self, order: &mut O) -> ApiResult<()> {
        let (status, party, warehouse, notes) = order.editable();
        ensure_open(*status, O::OPEN)?;
        if let Some(new) = self.party {
            *party = new;
        }
        if let Some(new) = self.warehouse {
            *warehouse = new;
        }
        if let Some(new) = self.notes {
            *notes = new;
        }
        if self.cancel {
            *status = O::CANCELLED;
        }
        Ok(())
    }
}

/// The caller's order `id` of `kind` with its lines in order; 404 when there is none.
pub async fn load<O: Row, L: Row>(
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
pub async fn delete_lines(
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

/// Completes the caller's order `id` of `kind`: marks it done and moves every line's stock
/// (all or nothing, one movement per item), in one transaction whose first write is the
/// status change, conditional on the order being open. A second completion is therefore a
/// 409 naming the status, never a second movement.
pub async fn complete<O, L>(
    db: &Db,
    caller: &AuthUser,
    kind: OrderKind,
    id: &str,
    how: Completion<O::Status>,
) -> ApiResult<(O, Vec<L>)>
where
    O: Row + Editable,
    L: Row + Quantity,
{
    let now = crate::db::now();
    let mut tx = db.begin_write().await?;
    let claimed = sqlx::query(&format!(
        "UPDATE {} SET status = $4, {} = $1, updated_at = $1
         WHERE organization_id = $2 AND id = $3 AND status = $5",
        kind.table.0, how.stamped
    ))
    .bind(&now)
    .bind(&caller.org_id)
    .bind(id)
    .bind(how.done.as_str())
    .bind(O::OPEN.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let (mut order, lines): (O, Vec<L>) = load(&mut tx, kind, &caller.org_id, id).await?;
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
            org_id: &caller.org_id,
            item_id,
            warehouse_id: &warehouse,
            delta: how.direction * quantity,
            source: how.source,
            source_id: id,
            reason: None,
            user_id: Some(&caller.user_id),
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

async fn check_refs(
    db: &Db,
    org_id: &str,
    kind: OrderKind,
    party: Option<&str>,
    warehouse: Option<&str>,
    v: &mut Validator,
) -> ApiResult<()> {
    fields::check_reference(db, kind.party.1, org_id, party, kind.party.0, v).await?;
    fields::check_reference(db, Table::Warehouses, org_id, warehouse, "warehouseId", v).await
}
