//! `from`/`to` date-range query parameters shared by order lists, the dashboard and reports.
//!
//! Both ends are inclusive calendar dates (`YYYY-MM-DD`, UTC). They are turned into
//! timestamp bounds `[from 00:00, to+1 00:00)` in the stored text format, so a range filter
//! is a plain index range scan on both engines.

use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, Time};

use crate::db;
use crate::error::Validator;

/// A validated range of timestamps (text, stored format); either end may be open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Period {
    /// Inclusive lower bound.
    pub start: Option<String>,
    /// Exclusive upper bound.
    pub end: Option<String>,
    /// The dates as given, for echoing back.
    pub from: Option<Date>,
    /// The dates as given, for echoing back.
    pub to: Option<Date>,
}

fn parse_date(raw: Option<&str>, field: &str, v: &mut Validator) -> Option<Date> {
    // Present means given: an empty or padded value is refused like any other non-date
    // (the document's `format: date`), not read as absent.
    let raw = raw?;
    // RFC 3339's full-date: four-digit year, no sign (`time` would read `-2026-01-01`).
    let shaped = raw.len() == 10
        && raw.bytes().enumerate().all(|(at, b)| {
            if at == 4 || at == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    // Year 0000 parses (the proleptic calendar's 1 BC), but a default range counted back
    // from it starts in year -1, which no date field can write (a probe saw the sales
    // chart echo `-001-12-03`): dates start at 0001-01-01.
    let parsed = shaped
        .then(|| Date::parse(raw, format_description!("[year]-[month]-[day]")).ok())
        .flatten()
        .filter(|date| date.year() >= 1);
    v.check(
        parsed.is_some(),
        field,
        "must be a date like 2026-01-31, from 0001-01-01",
    );
    parsed
}

fn midnight(date: Date) -> String {
    db::timestamp(OffsetDateTime::new_utc(date, Time::MIDNIGHT))
}

impl Period {
    /// Parses `from` and `to`; problems (bad dates, `from` after `to`) go to `v`.
    pub fn parse(from: Option<&str>, to: Option<&str>, v: &mut Validator) -> Self {
        let from = parse_date(from, "from", v);
        let to = parse_date(to, "to", v);
        if let (Some(f), Some(t)) = (from, to) {
            v.check(f <= t, "to", "must not be before from");
        }
        Self {
            start: from.map(midnight),
            end: to
                .and_then(|t| t.checked_add(Duration::days(1)))
                .map(midnight),
            from,
            to,
        }
    }

    /// Adds `column >= start AND column < end` to a filter.
    pub fn restrict(&self, filter: &mut crate::pagination::Filter, column: &str) {
        if let Some(start) = &self.start {
            let p = filter.bind(start.clone());
            filter.and(format!("{column} >= {p}"));
        }
        if let Some(end) = &self.end {
            let p = filter.bind(end.clone());
            filter.and(format!("{column} < {p}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusive_dates_become_half_open_timestamps() {
        let mut v = Validator::default();
        let p = Period::parse(Some("2026-01-01"), Some("2026-01-31"), &mut v);
        assert!(v.finish().is_ok());
        assert_eq!(p.start.as_deref(), Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(p.end.as_deref(), Some("2026-02-01T00:00:00.000Z"));
    }

    #[test]
    fn bad_or_reversed_dates_are_field_errors() {
        let mut v = Validator::default();
        Period::parse(Some("yesterday"), None, &mut v);
        assert!(v.finish().is_err());
        for signed in [
            "-2026-01-01",
            "+2026-01-01",
            "-001-12-31",
            "12026-01-01",
            "0000-01-01",
            "0000-12-31",
        ] {
            let mut v = Validator::default();
            Period::parse(None, Some(signed), &mut v);
            assert!(v.finish().is_err(), "{signed}");
        }
        let mut v = Validator::default();
        Period::parse(Some("2026-02-01"), Some("2026-01-01"), &mut v);
        assert!(v.finish().is_err());
    }
}
