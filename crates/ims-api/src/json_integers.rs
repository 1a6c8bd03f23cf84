//! Integral number literals written as floats (`4768.0`, `4.768e3`) read as the integers
//! they are. JSON Schema counts such a literal as an integer, and so do some clients'
//! encoders (Python's for a float that holds one); serde does not, and refuses it for an
//! integer field. The JSON extractor (`error::Json`) reads a body that failed its typed
//! parse once more, with these literals rewritten on the text, through the same typed
//! parse, so duplicate keys, syntax errors and every other rule apply to it as to the body
//! sent. Written by hand: no JSON crate rewrites literals on the text, and going through an
//! `f64` is what must not happen (serde_json's default float parsing may be a unit in the
//! last place off, which made `999999.0000000001` an integral 999999.0; a reparse through
//! `serde_json::Value` lost duplicate keys).

/// Integers longer than this are left as written: no field takes them (`i64` has 19
/// digits), and the typed parse refuses them.
const MAX_DIGITS: usize = 19;

/// The JSON text `bytes` with every number literal that is written as a float but is an
/// integer as written (`4768.0`, `4.768e3`; not `1999.99999999999999`, which a float would
/// round to 2000) written as that integer; `None` if there is none. Strings are skipped;
/// anything that is not a JSON number by RFC 8259's grammar (`1.0e`, `01.0`) is left as
/// written, for the typed parse to refuse. The work is linear in the body's length,
/// whatever its exponents (`1e999999` is not expanded).
pub fn rewritten(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
                out.extend_from_slice(&bytes[start..i]);
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let literal = &bytes[start..i];
                match integer_of(literal) {
                    Some(integer) => {
                        out.extend_from_slice(integer.as_bytes());
                        changed = true;
                    }
                    None => out.extend_from_slice(literal),
                }
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// A JSON number literal (`-12.50e1`) taken apart: its sign, its digits (`1250`, borrowed
/// as two runs) and where the decimal point falls among them once the exponent is applied
/// (`3`).
struct Literal<'a> {
    negative: bool,
    whole: &'a [u8],
    fraction: &'a [u8],
    point: i64,
}

impl Literal<'_> {
    /// The literal's digits, whole part then fraction.
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.whole.iter().chain(self.fraction).copied()
    }

    /// Whether it is an integer: every digit the exponent leaves after the point is `0`.
    fn integral(&self) -> bool {
        self.digits()
            .enumerate()
            .all(|(at, digit)| (at as i64) < self.point || digit == b'0')
    }
}

/// `literal` taken apart, if it is a JSON number (RFC 8259 §6: `-?(0|[1-9][0-9]*)`, then
/// optionally `.` and digits, then optionally `e`/`E`, a sign and digits).
fn literal_parts(literal: &[u8]) -> Option<Literal<'_>> {
    let digits_at = |text: &[u8]| text.iter().take_while(|b| b.is_ascii_digit()).count();
    let (negative, rest) = match literal.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, literal),
    };
    let (whole, mut rest) = rest.split_at(digits_at(rest));
    if whole.is_empty() || (whole.len() > 1 && whole[0] == b'0') {
        return None;
    }
    let mut fraction: &[u8] = &[];
    if let Some((b'.', after)) = rest.split_first() {
        let (digits, after) = after.split_at(digits_at(after));
        if digits.is_empty() {
            return None;
        }
        (fraction, rest) = (digits, after);
    }
    let mut shift = 0;
    if let Some((b'e' | b'E', after)) = rest.split_first() {
        let (sign, after) = match after.split_first() {
            Some((b'-', after)) => (-1, after),
            Some((b'+', after)) => (1, after),
            _ => (1, after),
        };
        let (digits, after) = after.split_at(digits_at(after));
        if digits.is_empty() {
            return None;
        }
        rest = after;
        // Saturated as it is read, past the literal's own length: beyond that, a positive
        // exponent makes an integer of more than `MAX_DIGITS` digits and a negative one
        // leaves every digit after the point, whatever its size. So an exponent of a
        // million digits costs a pass over them, and no number of that size.
        let limit = literal.len() as i64 + MAX_DIGITS as i64;
        let magnitude = digits
            .iter()
            .fold(0, |sum: i64, d| (sum * 10 + i64::from(d - b'0')).min(limit));
        shift = sign * magnitude;
    }
    if !rest.is_empty() {
        return None;
    }
    Some(Literal {
        negative,
        whole,
        fraction,
        point: whole.len() as i64 + shift,
    })
}

/// The integer a float-shaped literal (`-12.50e1`) is as written (`-125`), if it is one of
/// at most [`MAX_DIGITS`] digits; `None` for a plain integer literal, which needs no
/// rewriting, and for anything that is not a JSON number. Its length is known before any
/// digit is written: an exponent never makes this allocate more than 20 bytes.
fn integer_of(literal: &[u8]) -> Option<String> {
    // `-0` is an integer as written, but serde_json reads it as the float `-0.0` (a probe
    // had `"priceCents": -0` refused where `-0.0` and `0.0` were taken).
    if literal == b"-0" {
        return Some("0".into());
    }
    if !literal.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return None;
    }
    let parts = literal_parts(literal)?;
    if !parts.integral() {
        return None;
    }
    let zeros = parts.digits().take_while(|&d| d == b'0').count();
    let count = parts.whole.len() + parts.fraction.len();
    if zeros == count {
        // `-0.0` included: the integer zero has no sign.
        return Some("0".into());
    }
    // Integral with a non-zero digit: that digit is before the point, so `point > zeros`.
    let significant = usize::try_from(parts.point).ok()?.checked_sub(zeros)?;
    if significant > MAX_DIGITS {
        return None;
    }
    let mut text = String::with_capacity(significant + 1);
    if parts.negative {
        text.push('-');
    }
    // The digits before the point, then zeros for an exponent past the last digit.
    let digits = parts.digits().skip(zeros).chain(std::iter::repeat(b'0'));
    text.extend(digits.take(significant).map(char::from));
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integral(literal: &str) -> bool {
        literal_parts(literal.as_bytes()).is_some_and(|parts| parts.integral())
    }

    fn rewrite(body: &[u8]) -> Option<String> {
        rewritten(body).map(|b| String::from_utf8(b).expect("utf-8"))
    }

    #[test]
    fn number_literals_are_integral_only_as_written() {
        for literal in [
            "4768.0", "4.768e3", "-12.50e1", "1E2", "0.0", "2000", "1.5e+1", "100e-2",
        ] {
            assert!(integral(literal), "{literal}");
        }
        for literal in [
            "1999.99999999999999",
            "0.99999999999999999",
            "10000000000000.0000001",
            "1.5",
            "15e-1",
            "1e-400",
        ] {
            assert!(!integral(literal), "{literal}");
        }
        assert_eq!(
            rewrite(br#"{"a": 4768.0, "b": "1.5 2.0", "c": [2e3], "d": 2.2e-16, "e": -0.0}"#)
                .as_deref(),
            Some(r#"{"a": 4768, "b": "1.5 2.0", "c": [2000], "d": 2.2e-16, "e": 0}"#)
        );
        assert_eq!(rewrite(br#"{"a": 12, "b": "x\" 2.0"}"#), None);
        assert_eq!(
            rewrite(br#"{"a": -0, "b": [-0], "c": "-0", "d": -01}"#).as_deref(),
            Some(r#"{"a": 0, "b": [0], "c": "-0", "d": -01}"#)
        );
        // Not integral as written, whatever a float makes of them (probe 15).
        for kept in [
            "999999.0000000001",
            "999999.9999999999",
            "0.9999999999999999",
            "99999999999999.99e-1",
            "1999.99999999999999",
        ] {
            assert_eq!(
                rewrite(format!(r#"{{"a": {kept}}}"#).as_bytes()),
                None,
                "{kept}"
            );
        }
        assert_eq!(
            rewrite(br#"{"a": -12.50e1, "b": 1e18, "c": 1e19, "d": -0.5e1}"#).as_deref(),
            Some(r#"{"a": -125, "b": 1000000000000000000, "c": 1e19, "d": -5}"#)
        );
    }

    /// Exponents too long for an `i64` were read as 0: `5e-99999999999999999999` was
    /// stored as 5 and `1e99999999999999999999` as 1 (a review found it).
    #[test]
    fn exponents_of_any_length_keep_their_size() {
        for literal in [
            "5e-99999999999999999999",
            "1e99999999999999999999",
            "1.0e99999999999999999999999999999",
            "1e999999",
            "-3E+1000001",
        ] {
            assert_eq!(rewrite(literal.as_bytes()), None, "{literal}");
        }
        assert_eq!(
            rewrite(b"1.0e-0000000000000000000000000000"),
            Some("1".into())
        );
        assert_eq!(rewrite(b"0e99999999999999999999"), Some("0".into()));
        // A long whole part with a large negative exponent is still tiny, not `12`.
        let tiny = format!("12{}e-5000", "0".repeat(1000));
        assert_eq!(rewrite(tiny.as_bytes()), None);
        let exact = format!("12{}e-1000", "0".repeat(1000));
        assert_eq!(rewrite(exact.as_bytes()), Some("12".into()));
    }

    /// Not JSON numbers: left as written, so the typed parse refuses them (`1.0e` was
    /// rewritten to `1` and accepted).
    #[test]
    fn malformed_literals_are_left_for_the_parser() {
        for literal in [
            "1.0e", "1.e5", "01.0", "-.5", "1.0e+", "1.0-", "--1.0", "1.0e5.0",
        ] {
            assert_eq!(rewrite(literal.as_bytes()), None, "{literal}");
        }
    }

    /// `1e999999` was expanded to a million digits before its length was checked: a body of
    /// them held a runtime thread for minutes. The work is now linear in the body: these
    /// 400,000 literals take milliseconds, and took minutes before the fix, past the run's
    /// limit for a hung test (`.config/nextest.toml`), which is how this fails. No timed
    /// assertion.
    #[test]
    fn huge_exponents_are_never_expanded() {
        let body = format!("[{}]", vec!["1e999999"; 400_000].join(","));
        assert_eq!(rewrite(body.as_bytes()), None);
    }
}
