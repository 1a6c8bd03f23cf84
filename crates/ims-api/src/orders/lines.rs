//! Order lines shared by sales and purchase orders: validating the requested lines and
//! looking up the items they name, in one query, within the caller's organization.

use std::collections::HashMap;

use serde::Deserialize;

use crate::db::Db;
use crate::error::{ApiResult, Validator};
use crate::fields;
use crate::money::{self, LineAmounts, MAX_CENTS};

/// Most lines one order may have.
pub const MAX_LINES: usize = 500;
/// Largest quantity on one line.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// A requested line: `{itemId, quantity, unitPriceCents?}` or `{itemId, quantity, unitCostCents}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = OrderLineBody)]
#[serde(rename_all = "camelCase")]
pub struct LineBody {
    #[schema(format = Uuid)]
    pub item_id: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
    /// Sales orders only; default: the item's price.
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64)]
    pub unit_price_cents: Option<i64>,
    /// Purchase orders only; required there.
    #[schema(minimum = 0, maximum = 10_000_000_000_000_i64)]
    pub unit_cost_cents: Option<i64>,
}

/// A line that passed validation.
#[derive(Debug, Clone)]
pub struct Line {
    pub item_id: String,
    pub quantity: i64,
    /// The unit price or cost the client gave, if any.
    pub unit_cents: Option<i64>,
}

/// What an order needs to know about an item.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemFacts {
    pub id: String,
    pub price_cents: i64,
    pub tax_rate_bps: i64,
}

/// Validates `lines`; `unit_field` is `unitPriceCents` or `unitCostCents` and `unit_required`
/// says whether it must be present. Errors are keyed `lines[i].field`.
pub fn validate(
    lines: &[LineBody],
    unit_field: &str,
    unit_required: bool,
    v: &mut Validator,
) -> Vec<Line> {
    v.check(!lines.is_empty(), "lines", "must contain at least one line");
    v.check(
        lines.len() <= MAX_LINES,
        "lines",
        &format!("must contain at most {MAX_LINES} lines"),
    );
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let item_id =
                fields::reference(Some(line.item_id.clone()), &format!("lines[{i}].itemId"), v);
            v.check(
                (1..=MAX_QUANTITY).contains(&line.quantity),
                &format!("lines[{i}].quantity"),
                &format!("must be a whole number from 1 to {MAX_QUANTITY}"),
            );
            let (unit, other, other_field) = if unit_field == "unitCostCents" {
                (
                    line.unit_cost_cents,
                    line.unit_price_cents,
                    "unitPriceCents",
                )
            } else {
                (line.unit_price_cents, line.unit_cost_cents, "unitCostCents")
            };
            // The other order type's field is not used here, but the line's one schema bounds
            // it, and a value past the bounds is refused as the document says rather than
            // silently dropped (found by a probe).
            v.check(
                other.is_none_or(|u| (0..=MAX_CENTS).contains(&u)),
                &format!("lines[{i}].{other_field}"),
                &format!("must be from 0 to {MAX_CENTS}"),
            );
            v.check(
                unit.is_some() || !unit_required,
                &format!("lines[{i}].{unit_field}"),
                "is required",
            );
            v.check(
                unit.is_none_or(|u| (0..=MAX_CENTS).contains(&u)),
                &format!("lines[{i}].{unit_field}"),
                &format!("must be from 0 to {MAX_CENTS}"),
            );
            Some(Line {
                item_id: item_id?,
                quantity: line.quantity,
                unit_cents: unit,
            })
        })
        .collect()
}

/// The items `lines` name, from the caller's organization; a line naming an unknown item is
/// a field error.
pub async fn load_items(
    db: &Db,
    org_id: &str,
    lines: &[Line],
    v: &mut Validator,
) -> ApiResult<HashMap<String, ItemFacts>> {
    let mut ids: Vec<&str> = lines.iter().map(|l| l.item_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut found = HashMap::new();
    // Chunks keep the parameter count well under every engine's limit.
    for chunk in ids.chunks(200) {
        let sql = format!(
            "SELECT i.id, i.price_cents, COALESCE(t.rate_bps, 0) AS tax_rate_bps
             FROM items i LEFT JOIN tax_rates t ON t.id = i.tax_rate_id
             WHERE i.organization_id = $1 AND i.id IN ({})",
            crate::db::placeholders(2, chunk.len())
        );
        let mut query = sqlx::query_as::<_, ItemFacts>(&sql).bind(org_id);
        for id in chunk {
            query = query.bind(*id);
        }
        for item in query.fetch_all(db.pool()).await? {
            found.insert(item.id.clone(), item);
        }
    }
    for (i, line) in lines.iter().enumerate() {
        v.check(
            found.contains_key(&line.item_id),
            &format!("lines[{i}].itemId"),
            "does not exist",
        );
    }
    Ok(found)
}

/// The amounts of line `i` (`quantity × unit`, taxed at `bps`); a line whose amounts would
/// not fit is recorded in `v` against `lines[i]`.
pub fn amounts(i: usize, quantity: i64, unit: i64, bps: i64, v: &mut Validator) -> LineAmounts {
    let amounts = money::line_amounts(quantity, unit, bps);
    // A negative quantity or price is refused with its own message; only figures that are
    // each valid can make a line too large (both messages at once misled, said a probe).
    let figures_valid = quantity >= 0 && unit >= 0 && bps >= 0;
    v.check(
        amounts.is_some() || !figures_valid,
        &format!("lines[{i}]"),
        &format!("the line's total would exceed {MAX_CENTS} cents"),
    );
    amounts.unwrap_or(LineAmounts {
        subtotal: 0,
        tax: 0,
        total: 0,
    })
}

/// The order total over `amounts`; one that would not fit is recorded in `v` against `lines`.
pub fn order_total(amounts: impl IntoIterator<Item = i64>, v: &mut Validator) -> i64 {
    let total = money::total(amounts);
    v.check(
        total.is_some(),
        "lines",
        &format!("the order's total would exceed {MAX_CENTS} cents"),
    );
    total.unwrap_or(0)
}

/// Total quantity per item, so each item's stock is checked once however many lines name it.
pub fn quantities_by_item<'a>(lines: impl Iterator<Item = (&'a str, i64)>) -> Vec<(&'a str, i64)> {
    let mut totals: Vec<(&str, i64)> = Vec::new();
    for (item, quantity) in lines {
        match totals.iter_mut().find(|(i, _)| *i == item) {
            Some((_, q)) => *q += quantity,
            None => totals.push((item, quantity)),
        }
    }
    // A fixed order of updates means two orders touching the same items lock them in the
    // same order, so they cannot deadlock each other on PostgreSQL.
    totals.sort_unstable();
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_summed_and_sorted() {
        let lines = [("b", 2), ("a", 1), ("b", 3)];
        assert_eq!(
            quantities_by_item(lines.into_iter()),
            vec![("a", 1), ("b", 5)]
        );
    }
}
