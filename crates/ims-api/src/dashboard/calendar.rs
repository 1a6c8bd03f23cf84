//! Calendar arithmetic of the sales chart: its buckets (days or months), the range a chart
//! covers when the client leaves it open, and the labels of every bucket, zero-filled. No
//! SQL here; the queries are in the parent module, the dates come from `crate::period`.

use time::{Date, Duration, Month};

use crate::error::Validator;
use crate::period::Period;

/// Longest daily chart: a year, leap years included.
const MAX_DAYS: i64 = 366;
/// Longest monthly chart: ten years.
const MAX_MONTHS: i64 = 120;
/// Default daily chart: the last 30 days, today included.
const DEFAULT_DAYS: i64 = 30;
/// Default monthly chart: the last 12 months, this one included.
const DEFAULT_MONTHS: i64 = 12;

/// A date as `YYYY-MM-DD`, the form `from` and `to` are given and echoed in.
pub(crate) fn date_text(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Chart buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Interval {
    Day,
    Month,
}

impl Interval {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// Characters of a stored timestamp that name the bucket: `2026-01-05` or `2026-01`.
    pub(super) fn prefix_len(self) -> u32 {
        match self {
            Self::Day => 10,
            Self::Month => 7,
        }
    }
}

/// Months since year 0, so month arithmetic is integer arithmetic.
fn month_index(date: Date) -> i64 {
    i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1
}

/// The first day of the month numbered `index` (see [`month_index`]).
fn month_start(index: i64) -> Option<Date> {
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = Month::try_from(u8::try_from(index.rem_euclid(12) + 1).ok()?).ok()?;
    Date::from_calendar_date(year, month, 1).ok()
}

/// The dates a chart covers: the given ones, or the defaults around them.
pub(super) fn chart_range(
    interval: Interval,
    period: &Period,
    today: Date,
    v: &mut Validator,
) -> Option<(Date, Date)> {
    let to = period.to.unwrap_or(today);
    let from = match period.from {
        Some(from) => from,
        None => match interval {
            Interval::Day => to.checked_sub(Duration::days(DEFAULT_DAYS - 1))?,
            Interval::Month => month_start(month_index(to) - (DEFAULT_MONTHS - 1))?,
        },
    };
    if period.to.is_none() {
        // Period only compares the two when both were given.
        v.check(
            from <= to,
            "from",
            "must not be after to (today when to is not given)",
        );
    }
    if from > to {
        return None;
    }
    match interval {
        Interval::Day => v.check(
            (to - from).whole_days() < MAX_DAYS,
            "to",
            "the range may cover at most 366 days with interval=day",
        ),
        Interval::Month => v.check(
            month_index(to) - month_index(from) < MAX_MONTHS,
            "to",
            "the range may cover at most 120 months with interval=month",
        ),
    };
    Some((from, to))
}

/// Every bucket label from `from` to `to`, in order.
pub(super) fn labels(interval: Interval, from: Date, to: Date) -> Vec<String> {
    match interval {
        Interval::Day => {
            let mut out = Vec::new();
            let mut day = Some(from);
            while let Some(d) = day.filter(|d| *d <= to) {
                out.push(date_text(d));
                day = d.next_day();
            }
            out
        }
        Interval::Month => (month_index(from)..=month_index(to))
            .map(|m| format!("{:04}-{:02}", m.div_euclid(12), m.rem_euclid(12) + 1))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn month_labels_cross_years() {
        assert_eq!(
            labels(
                Interval::Month,
                date!(2025 - 11 - 15),
                date!(2026 - 02 - 01)
            ),
            ["2025-11", "2025-12", "2026-01", "2026-02"]
        );
        assert_eq!(
            labels(Interval::Day, date!(2024 - 02 - 28), date!(2024 - 03 - 01)),
            ["2024-02-28", "2024-02-29", "2024-03-01"]
        );
    }

    #[test]
    fn default_ranges() {
        let mut v = Validator::default();
        let today = date!(2026 - 03 - 10);
        let none = Period::default();
        assert_eq!(
            chart_range(Interval::Day, &none, today, &mut v),
            Some((date!(2026 - 02 - 09), today))
        );
        assert_eq!(
            chart_range(Interval::Month, &none, today, &mut v),
            Some((date!(2025 - 04 - 01), today))
        );
        assert!(v.finish().is_ok());
    }

    #[test]
    fn range_limits() {
        let today = date!(2026 - 03 - 10);
        let mut v = Validator::default();
        let mut p = Period::parse(Some("2025-01-01"), Some("2025-12-31"), &mut v);
        assert!(chart_range(Interval::Day, &p, today, &mut v).is_some());
        assert!(v.finish().is_ok(), "365 days");
        p = Period::parse(Some("2024-01-01"), Some("2024-12-31"), &mut v);
        chart_range(Interval::Day, &p, today, &mut v);
        assert!(v.finish().is_ok(), "366 days");
        p = Period::parse(Some("2024-01-01"), Some("2025-01-01"), &mut v);
        chart_range(Interval::Day, &p, today, &mut v);
        assert!(v.finish().is_err(), "367 days");
        p = Period::parse(Some("2016-01-01"), Some("2025-12-31"), &mut v);
        chart_range(Interval::Month, &p, today, &mut v);
        assert!(v.finish().is_ok(), "120 months");
        p = Period::parse(Some("2015-12-31"), Some("2025-12-01"), &mut v);
        chart_range(Interval::Month, &p, today, &mut v);
        assert!(v.finish().is_err(), "121 months");
        p = Period::parse(Some("2026-04-01"), None, &mut v);
        chart_range(Interval::Day, &p, today, &mut v);
        assert!(v.finish().is_err(), "from after today without to");
    }
}
