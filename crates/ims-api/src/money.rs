//! Money and quantity bounds, and arithmetic on them that cannot overflow.
//!
//! Every number a client sends is bounded (the bounds below, also in the OpenAPI schema),
//! so each stored figure fits in `i64` with room to spare. Figures computed from them (line
//! amounts, tax, order totals) are computed in `i128` and checked against [`MAX_CENTS`]: a
//! write whose figures would not fit is refused with a 422 before anything is written,
//! never stored wrapped. Sums over an unbounded number of rows (dashboards, reports) are
//! read exactly with [`ExactSum`], whatever the engine, into [`Cents`] (`i128`).

use serde::Serialize;

use crate::error::Validator;

/// Largest amount of money, in cents, that IMS accepts or stores in one figure: a price, a
/// cost, a payment, a line's subtotal, tax or total, an order's or invoice's total. 10^13
/// cents is 100 billion currency units, beyond any real order, and leaves `i64` (9.2·10^18)
/// a factor of 900,000 of headroom for sums.
pub const MAX_CENTS: i64 = 10_000_000_000_000;

/// Largest tax rate, in basis points (100,000 bps = 1,000 %).
pub const MAX_RATE_BPS: i64 = 100_000;

/// Largest stock level of one item in one warehouse, and the largest reorder level. An
/// increment that would pass it is refused; a level times the largest cost still fits in
/// `i128` many times over.
pub const MAX_STOCK: i64 = 1_000_000_000_000;

/// Records in `v` unless `cents` is an amount a client may send (`0..=MAX_CENTS`).
pub fn check_cents(cents: i64, field: &str, v: &mut Validator) {
    v.check(
        (0..=MAX_CENTS).contains(&cents),
        field,
        &format!("must be from 0 to {MAX_CENTS}"),
    );
}

/// Records in `v` unless `quantity` is a storable stock or reorder level (`0..=MAX_STOCK`).
pub fn check_stock(quantity: i64, field: &str, v: &mut Validator) {
    v.check(
        (0..=MAX_STOCK).contains(&quantity),
        field,
        &format!("must be from 0 to {MAX_STOCK}"),
    );
}

/// The amounts of one order line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineAmounts {
    /// `quantity × unit`.
    pub subtotal: i64,
    /// Tax on the subtotal, rounded half up to the cent.
    pub tax: i64,
    /// `subtotal + tax`.
    pub total: i64,
}

/// `value` as an `i64` when it is a storable amount (`0..=MAX_CENTS`).
fn storable(value: i128) -> Option<i64> {
    if (0..=i128::from(MAX_CENTS)).contains(&value) {
        i64::try_from(value).ok()
    } else {
        None
    }
}

/// Tax on `subtotal` at `bps` basis points, rounded half up to the cent; exact for every
/// `i64` input.
pub fn tax(subtotal: i64, bps: i64) -> i128 {
    (i128::from(subtotal) * i128::from(bps) + 5_000).div_euclid(10_000)
}

/// The amounts of a line of `quantity` at `unit` cents taxed at `bps`; `None` when any of
/// them would exceed [`MAX_CENTS`] (or be negative).
pub fn line_amounts(quantity: i64, unit: i64, bps: i64) -> Option<LineAmounts> {
    let subtotal = i128::from(quantity) * i128::from(unit);
    let tax = tax(storable(subtotal)?, bps);
    Some(LineAmounts {
        subtotal: storable(subtotal)?,
        tax: storable(tax)?,
        total: storable(subtotal + tax)?,
    })
}

/// The sum of `amounts` when it is a storable amount; `None` when it would exceed
/// [`MAX_CENTS`].
pub fn total(amounts: impl IntoIterator<Item = i64>) -> Option<i64> {
    storable(amounts.into_iter().map(i128::from).sum())
}

/// An exact sum of money over any number of rows, as read by [`ExactSum`]; serialized as a
/// plain JSON integer, which may exceed 2^63 (and 2^53, where JavaScript's `Number` stops
/// being exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Cents(pub i128);

impl std::ops::Add for Cents {
    type Output = Cents;
    fn add(self, other: Cents) -> Cents {
        Cents(self.0 + other.0)
    }
}

impl std::iter::Sum for Cents {
    fn sum<I: Iterator<Item = Cents>>(iter: I) -> Cents {
        Cents(iter.map(|c| c.0).sum())
    }
}

/// The text [`ExactSum::select`] produces was not `<high>:<low>`.
#[derive(Debug, thiserror::Error)]
#[error("not an exact sum: {0:?}")]
pub struct BadSum(String);

impl TryFrom<String> for Cents {
    type Error = BadSum;

    /// Decodes `<high>:<low>` (see [`ExactSum`]); use with `#[sqlx(try_from = "String")]`.
    fn try_from(text: String) -> Result<Self, BadSum> {
        let sum = |part: &str| {
            let (high, low) = part.split_once(':')?;
            let high: i128 = high.trim().parse().ok()?;
            let low: i128 = low.trim().parse().ok()?;
            Some(high * SPLIT + low)
        };
        let parsed = match text.split_once('|') {
            Some((high, low)) => sum(high).zip(sum(low)).map(|(h, l)| h * PRODUCT_SPLIT + l),
            None => sum(&text),
        };
        parsed.map(Cents).ok_or(BadSum(text))
    }
}

impl utoipa::PartialSchema for Cents {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(0))
            .description(Some(
                "A sum of cents over many records, exact: it may exceed 2^53 and 2^63, so \
                 parse it as a big integer",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Cents {}

/// 2^32: each row's value is split into `value / SPLIT` and `value % SPLIT`.
const SPLIT: i128 = 1 << 32;

/// SQL for the exact sum of a non-negative `BIGINT` expression over any number of rows, on
/// both engines.
///
/// SQLite's `SUM` fails on `i64` overflow and PostgreSQL's `SUM(bigint)` is a `numeric`
/// that does not fit back into `BIGINT`; neither engine has a portable 128-bit integer. So
/// each row's value is split at 2^32 into a high and a low part, each part is summed (both
/// sums fit in `i64` up to 2^31 rows of any `i64` value), and the two sums travel as the
/// text `<high>:<low>`, which [`Cents`] decodes and recombines in `i128`. No crate does
/// this across SQLite and PostgreSQL through sqlx's `Any` driver, hence by hand.
#[derive(Debug, Clone, Copy)]
pub struct ExactSum<'a>(pub &'a str);

impl ExactSum<'_> {
    fn high(&self) -> String {
        format!(
            "CAST(COALESCE(SUM(({}) / 4294967296), 0) AS BIGINT)",
            self.0
        )
    }

    fn low(&self) -> String {
        format!(
            "CAST(COALESCE(SUM(({}) % 4294967296), 0) AS BIGINT)",
            self.0
        )
    }

    /// The sum as the text `<high>:<low>`.
    fn text(&self) -> String {
        format!(
            "CAST({} AS TEXT) || ':' || CAST({} AS TEXT)",
            self.high(),
            self.low()
        )
    }

    /// A select-list item `<text> AS alias`, read into a [`Cents`] field.
    pub fn select(&self, alias: &str) -> String {
        format!("{} AS {alias}", self.text())
    }

    /// `ORDER BY` terms putting the largest sum first, exactly: the sum is `high·2^32 + low`
    /// with `low ≥ 0`, so (`high + low / 2^32`, `low % 2^32`) orders like the sum itself,
    /// and each term fits in `i64`.
    pub fn order_desc(&self) -> String {
        let low = self.low();
        format!(
            "{} + {low} / 4294967296 DESC, {low} % 4294967296 DESC",
            self.high()
        )
    }

    /// Select-list items naming the two [`order_desc`](Self::order_desc) terms
    /// `alias_k1` and `alias_k2`, for ordering outside a subquery.
    pub fn order_keys(&self, alias: &str) -> String {
        let low = self.low();
        format!(
            "{} + {low} / 4294967296 AS {alias}_k1, {low} % 4294967296 AS {alias}_k2",
            self.high()
        )
    }
}

/// 2^22: where [`ExactProductSum`] splits the amount.
const PRODUCT_SPLIT: i128 = 1 << 22;

/// SQL for the exact sum of `quantity × cents` over any number of rows, where `quantity` is
/// at most [`MAX_STOCK`] (< 2^40) and `cents` at most [`MAX_CENTS`] (< 2^44), as for the
/// value of stock levels at cost.
///
/// The product itself may not fit in `i64`, so `cents` is split at 2^22: both
/// `quantity × (cents / 2^22)` and `quantity × (cents % 2^22)` stay below 2^62, and each is
/// summed with [`ExactSum`]. The column is `<high sum>|<low sum>`, decoded by [`Cents`] as
/// `high · 2^22 + low`.
#[derive(Debug, Clone, Copy)]
pub struct ExactProductSum<'a> {
    /// A non-negative `BIGINT` expression bounded by [`MAX_STOCK`].
    pub quantity: &'a str,
    /// A non-negative `BIGINT` expression bounded by [`MAX_CENTS`].
    pub cents: &'a str,
}

impl ExactProductSum<'_> {
    /// A select-list item `<text> AS alias`, read into a [`Cents`] field.
    pub fn select(&self, alias: &str) -> String {
        let (quantity, cents) = (self.quantity, self.cents);
        let high = format!("({quantity}) * (({cents}) / 4194304)");
        let low = format!("({quantity}) * (({cents}) % 4194304)");
        format!(
            "{} || '|' || {} AS {alias}",
            ExactSum(&high).text(),
            ExactSum(&low).text()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference: everything in `i128`, no bounds; `i128::MAX` stands for "more than
    /// `i128` holds" (a subtotal near 2^126 times a rate).
    fn reference(quantity: i64, unit: i64, bps: i64) -> (i128, i128, i128) {
        let subtotal = i128::from(quantity) * i128::from(unit);
        let tax = subtotal
            .checked_mul(i128::from(bps))
            .map_or(i128::MAX, |t| (t + 5_000).div_euclid(10_000));
        (subtotal, tax, subtotal.saturating_add(tax))
    }

    #[test]
    fn tax_rounds_half_up() {
        assert_eq!(tax(1000, 825), 83); // 82.5 → 83
        assert_eq!(tax(999, 825), 82); // 82.4175 → 82
        assert_eq!(tax(0, 825), 0);
        assert_eq!(tax(12345, 0), 0);
        assert_eq!(tax(i64::MAX, MAX_RATE_BPS), i128::from(i64::MAX) * 10);
    }

    #[test]
    fn the_largest_line_fits_and_one_cent_more_does_not() {
        let at = line_amounts(1, MAX_CENTS, 0).map(|l| l.total);
        assert_eq!(at, Some(MAX_CENTS));
        assert_eq!(line_amounts(1, MAX_CENTS + 1, 0), None);
        // Tax can push a storable subtotal over the bound.
        assert_eq!(line_amounts(1, MAX_CENTS, 1), None);
        // The wrap: i64::MAX × 3 and 4.6·10^18 at 100 % tax.
        assert_eq!(line_amounts(3, i64::MAX, 0), None);
        assert_eq!(line_amounts(1, 4_600_000_000_000_000_000, 10_000), None);
    }

    #[test]
    fn totals_are_checked() {
        assert_eq!(total([MAX_CENTS - 1, 1]), Some(MAX_CENTS));
        assert_eq!(total([MAX_CENTS, 1]), None);
        assert_eq!(total([i64::MAX, i64::MAX]), None);
        assert_eq!(total([]), Some(0));
    }

    #[test]
    fn exact_sums_decode() {
        let cents = |s: &str| Cents::try_from(s.to_string()).ok();
        assert_eq!(cents("0:0"), Some(Cents(0)));
        assert_eq!(cents("3:5"), Some(Cents(3 * SPLIT + 5)));
        // Low parts sum past 2^32; that is what the recombination is for.
        assert_eq!(cents("1:8589934592"), Some(Cents(3 * SPLIT)));
        assert_eq!(cents("0:1|0:1"), Some(Cents((1 << 22) + 1)));
        assert_eq!(cents("x"), None);
        assert_eq!(cents("0:1|"), None);
        assert_eq!(cents("1:"), None);
    }

    proptest! {
        #[test]
        fn line_amounts_match_the_reference(
            quantity in 0i64..=i64::MAX,
            unit in 0i64..=i64::MAX,
            bps in 0i64..=MAX_RATE_BPS,
        ) {
            let (subtotal, tax, total) = reference(quantity, unit, bps);
            let fits = total <= i128::from(MAX_CENTS);
            match line_amounts(quantity, unit, bps) {
                Some(line) => {
                    prop_assert!(fits);
                    prop_assert_eq!(i128::from(line.subtotal), subtotal);
                    prop_assert_eq!(i128::from(line.tax), tax);
                    prop_assert_eq!(i128::from(line.total), total);
                }
                None => prop_assert!(!fits),
            }
        }

        #[test]
        fn small_lines_are_never_refused(
            // At most 10^6 × 9·10^5 = 9·10^11 before tax, and 11 times that with the
            // largest rate (1,000 %): 9.9·10^12, under MAX_CENTS. (A unit price up to 10^6
            // let the largest rate reach 1.1·10^13, which is rightly refused.)
            quantity in 1i64..=1_000_000,
            unit in 0i64..=900_000,
            bps in 0i64..=MAX_RATE_BPS,
        ) {
            let (subtotal, tax, total) = reference(quantity, unit, bps);
            let line = line_amounts(quantity, unit, bps);
            prop_assert_eq!(
                line.map(|l| (i128::from(l.subtotal), i128::from(l.tax), i128::from(l.total))),
                Some((subtotal, tax, total))
            );
        }

        #[test]
        fn totals_match_the_reference(amounts in proptest::collection::vec(0i64..=i64::MAX, 0..20)) {
            let sum: i128 = amounts.iter().copied().map(i128::from).sum();
            let expected = (sum <= i128::from(MAX_CENTS)).then_some(sum as i64);
            prop_assert_eq!(total(amounts), expected);
        }

        #[test]
        fn split_sums_recombine_exactly(values in proptest::collection::vec(0i64..=i64::MAX, 0..50)) {
            // What the SQL computes, in i64 as the engines do.
            let high: i64 = values.iter().map(|v| v / 4_294_967_296).sum();
            let low: i64 = values.iter().map(|v| v % 4_294_967_296).sum();
            let decoded = Cents::try_from(format!("{high}:{low}")).ok();
            let exact: i128 = values.iter().copied().map(i128::from).sum();
            prop_assert_eq!(decoded, Some(Cents(exact)));
            // And the order keys order like the exact value.
            let k1 = high + low / 4_294_967_296;
            let k2 = low % 4_294_967_296;
            prop_assert_eq!(i128::from(k1) * SPLIT + i128::from(k2), exact);
        }

        #[test]
        fn product_sums_recombine_exactly(
            rows in proptest::collection::vec((0i64..=MAX_STOCK, 0i64..=MAX_CENTS), 0..50),
        ) {
            // What the SQL computes, in checked i64 as the engines do (an overflow would be
            // an error there, and a panic here).
            let part = |f: fn(i64) -> i64| -> (i64, i64) {
                let products: Vec<i64> = rows
                    .iter()
                    .map(|(q, c)| q.checked_mul(f(*c)).expect("fits in i64"))
                    .collect();
                (
                    products.iter().map(|p| p / 4_294_967_296).sum(),
                    products.iter().map(|p| p % 4_294_967_296).sum(),
                )
            };
            let (hh, hl) = part(|c| c / 4_194_304);
            let (lh, ll) = part(|c| c % 4_194_304);
            let decoded = Cents::try_from(format!("{hh}:{hl}|{lh}:{ll}")).ok();
            let exact: i128 = rows.iter().map(|(q, c)| i128::from(*q) * i128::from(*c)).sum();
            prop_assert_eq!(decoded, Some(Cents(exact)));
        }
    }
}
