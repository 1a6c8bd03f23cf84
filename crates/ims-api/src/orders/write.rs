//! Creating and changing an order, written once for both kinds: everything the client
//! sent is validated first (counterpart, warehouse, notes, lines, each reference checked
//! within the caller's organization), then the row and its lines are written in one
//! transaction. A kind says only how its lines are priced and how its rows are stored
//! ([`OrderType`]).

use std::future::Future;

use sqlx::AnyConnection;
use uuid::Uuid;

use super::lines::LineBody;
use super::{
    delete_lines, ensure_open, load, Completion, Editable, OrderKind, Quantity, MAX_NOTES_CHARS,
};
use crate::db::{self, Db};
use crate::error::{ApiError, ApiResult, Validator};
use crate::fields::{self, Table};
use crate::owned::Row;

/// One kind of order (its row type) as [`create`] and [`patch`] write it.
pub trait OrderType: Row + Editable + Sync {
    /// Its lines.
    type Line: Row + Quantity + Sync;
    /// What its lines add up to on the order (the total; subtotal and tax for sales).
    type Figures: Send;
    /// Its tables and names.
    const KIND: OrderKind;
    /// How it is completed (fulfilled, received): see [`complete`](super::complete).
    const COMPLETION: Completion<Self::Status>;

    /// Validates the requested `lines` (errors into `v`) and prices or costs them.
    fn price(
        db: &Db,
        org_id: &str,
        lines: &[LineBody],
        v: &mut Validator,
    ) -> impl Future<Output = ApiResult<(Vec<Self::Line>, Self::Figures)>> + Send;

    /// A new open order, stamped `now`.
    fn open(id: String, refs: Refs, figures: Self::Figures, now: String) -> Self;

    /// Takes the figures of replaced lines.
    fn refigure(&mut self, figures: Self::Figures);

    /// Inserts this new order's row.
    fn insert(
        &self,
        conn: &mut AnyConnection,
        org_id: &str,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// Writes this order's changeable columns, its update time set to `now`.
    fn update(
        &mut self,
        conn: &mut AnyConnection,
        org_id: &str,
        now: String,
    ) -> impl Future<Output = ApiResult<()>> + Send;

    /// Inserts `lines` of order `order_id`, numbered from 1.
    fn insert_lines(
        conn: &mut AnyConnection,
        org_id: &str,
        order_id: &str,
        lines: &[Self::Line],
    ) -> impl Future<Output = ApiResult<()>> + Send;
}

/// A new order as the client sent it.
pub struct NewOrder {
    /// The counterpart (customer, vendor).
    pub party: String,
    pub warehouse: String,
    pub notes: Option<String>,
    pub lines: Vec<LineBody>,
}

/// A new order's counterpart, warehouse and notes, validated.
pub struct Refs {
    pub party: String,
    pub warehouse: String,
    pub notes: Option<String>,
}

/// Creates an order of kind `O` in the caller's organization.
pub async fn create<O: OrderType>(
    db: &Db,
    org_id: &str,
    new: NewOrder,
) -> ApiResult<(O, Vec<O::Line>)> {
    let mut v = Validator::default();
    let kind = O::KIND;
    let (party, warehouse) = references(
        db,
        org_id,
        kind,
        Some(new.party),
        Some(new.warehouse),
        &mut v,
    )
    .await?;
    let notes = fields::optional_text(new.notes, "notes", MAX_NOTES_CHARS, &mut v);
    let (lines, figures) = O::price(db, org_id, &new.lines, &mut v).await?;
    v.finish()?;

    let party = party.unwrap_or_default();
    let mut tx = db.begin_write().await?;
    let (field, table) = kind.party;
    fields::hold_contact(&mut tx, table, org_id, &party, field).await?;
    let refs = Refs {
        party,
        warehouse: warehouse.unwrap_or_default(),
        notes,
    };
    let id = Uuid::new_v4().to_string();
    let order = O::open(id.clone(), refs, figures, db::now());
    order.insert(&mut tx, org_id).await?;
    O::insert_lines(&mut tx, org_id, &id, &lines).await?;
    tx.commit().await?;
    Ok((order, lines))
}

/// A PATCH of an order as the client sent it: absent fields are `None` (kept).
pub struct OrderPatch {
    /// Only `cancelled` is accepted.
    pub status: Option<Option<String>>,
    /// The counterpart (customer, vendor).
    pub party: Option<Option<String>>,
    pub warehouse: Option<Option<String>>,
    pub notes: Option<Option<String>>,
    /// Replaces every line (re-priced).
    pub lines: Option<Option<Vec<LineBody>>>,
}

/// Changes the caller's open order `id` of kind `O` (409 when it is no longer open).
pub async fn patch<O: OrderType>(
    db: &Db,
    org_id: &str,
    id: &str,
    patch: OrderPatch,
) -> ApiResult<(O, Vec<O::Line>)> {
    let mut v = Validator::default();
    let kind = O::KIND;
    let cancel = match patch.status {
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
    let party = changed(patch.party, kind.party.0, &mut v);
    let warehouse = changed(patch.warehouse, "warehouseId", &mut v);
    let (party, warehouse) = references(db, org_id, kind, party, warehouse, &mut v).await?;
    let notes = patch
        .notes
        .map(|n| fields::optional_text(n, "notes", MAX_NOTES_CHARS, &mut v));
    let priced = match changed(patch.lines, "lines", &mut v) {
        Some(lines) => Some(O::price(db, org_id, &lines, &mut v).await?),
        None => None,
    };
    v.finish()?;

    let mut tx = db.begin_write().await?;
    // The order's row lock first (PostgreSQL; SQLite holds the write lock already), for
    // every PATCH: the order is read and written back whole below, so without the lock a
    // PATCH of its notes could read it before a concurrent PATCH of its lines committed and
    // then write the old totals over the new lines (found by a probe with two instances).
    sqlx::query(&format!(
        "UPDATE {} SET updated_at = updated_at WHERE organization_id = $1 AND id = $2",
        kind.table.0
    ))
    .bind(org_id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if let Some(party) = party.as_deref() {
        let (field, table) = kind.party;
        fields::hold_contact(&mut tx, table, org_id, party, field).await?;
    }
    let binding = party.is_some() || warehouse.is_some() || priced.is_some() || cancel;
    // Then its bill: billing takes the same row lock before it copies the figures, so one
    // waits for the other and neither sees the other half done.
    let billed: Option<String> = match (kind.billed_by, binding) {
        (Some(billed_by), true) => {
            sqlx::query_scalar(billed_by)
                .bind(org_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }
        _ => None,
    };
    let (mut order, mut lines): (O, Vec<O::Line>) = load(&mut tx, kind, org_id, id).await?;
    {
        let (status, current_party, current_warehouse, current_notes) = order.editable();
        // A closed order changes in nothing, notes included: said first, so that the
        // invoiced order's answer below never points to an edit that is then refused
        // (a fulfilled, invoiced order was told "only its notes can change"; found by a
        // probe).
        ensure_open(*status, O::OPEN)?;
        if let Some(number) = billed {
            return Err(ApiError::Conflict(format!(
                "the {} is invoiced ({number}): only its notes can change",
                kind.noun
            )));
        }
        if let Some(new) = party {
            *current_party = new;
        }
        if let Some(new) = warehouse {
            *current_warehouse = new;
        }
        if let Some(new) = notes {
            *current_notes = new;
        }
        if cancel {
            *status = O::CANCELLED;
        }
    }
    if let Some((new_lines, figures)) = priced {
        hold_items(&mut tx, db.backend(), org_id, &new_lines).await?;
        delete_lines(&mut tx, kind, org_id, id).await?;
        O::insert_lines(&mut tx, org_id, id, &new_lines).await?;
        order.refigure(figures);
        lines = new_lines;
    }
    order.update(&mut tx, org_id, db::now()).await?;
    tx.commit().await?;
    Ok((order, lines))
}

/// On PostgreSQL, a share of the rows of the items `lines` name, taken before an order's old
/// lines are deleted (SQLite's write lock holds everything already). Each new line's
/// foreign-key check takes that share anyway, but only after the old lines are deleted: a
/// `DELETE /items/{id}` of one of those items, holding the item's row, waited for the
/// deleted line's transaction to learn whether the item was still referred to while the
/// PATCH waited for the item, and "deadlock detected" answered one of them 500 (a test
/// reproduced it in every run: `deleting_an_item_while_an_order_s_lines_are_replaced_…`).
/// Holding the items first, the deletion either waits for the PATCH or finds the old line
/// still there and is refused (409) before the PATCH goes on.
async fn hold_items<L: Quantity>(
    conn: &mut AnyConnection,
    backend: db::Backend,
    org_id: &str,
    lines: &[L],
) -> ApiResult<()> {
    if backend != db::Backend::Postgres {
        return Ok(());
    }
    let mut ids: Vec<&str> = lines.iter().map(|l| l.item_and_quantity().0).collect();
    ids.sort_unstable();
    ids.dedup();
    // In chunks of 200 parameters, as `lines::load_items` reads them. Shares never wait on
    // each other, so two orders naming the same items do not either.
    for chunk in ids.chunks(200) {
        let sql = format!(
            "SELECT id FROM items WHERE organization_id = $1 AND id IN ({})
             ORDER BY id FOR KEY SHARE",
            db::placeholders(2, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(org_id);
        for id in chunk {
            query = query.bind(*id);
        }
        query.fetch_all(&mut *conn).await?;
    }
    Ok(())
}

/// The counterpart and warehouse given (each `None` when not given), validated as ids and
/// checked to exist in the caller's organization (errors into `v`).
async fn references(
    db: &Db,
    org_id: &str,
    kind: OrderKind,
    party: Option<String>,
    warehouse: Option<String>,
    v: &mut Validator,
) -> ApiResult<(Option<String>, Option<String>)> {
    let (field, table) = kind.party;
    let party = party.and_then(|p| fields::reference(Some(p), field, v));
    let warehouse = warehouse.and_then(|w| fields::reference(Some(w), "warehouseId", v));
    fields::check_reference(db, table, org_id, party.as_deref(), field, v).await?;
    let (field, table) = ("warehouseId", Table::Warehouses);
    fields::check_reference(db, table, org_id, warehouse.as_deref(), field, v).await?;
    Ok((party, warehouse))
}

/// The new value of a PATCH field that cannot be null: `None` when absent (unchanged).
fn changed<T>(patched: Option<Option<T>>, field: &str, v: &mut Validator) -> Option<T> {
    fields::merge_required(patched.map(|p| p.map(Some)), None, field, v)
}
