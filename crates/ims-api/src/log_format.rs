//! The text log line's fields and every line's timestamp, written more cheaply than
//! tracing-subscriber's defaults, for the access line that every request writes at the
//! default `info` level.
//!
//! Counted with callgrind on a release server (L2 cache hits under `wrk`), that line cost
//! about 13,300 instructions (about 6,900 with this module): a quarter of the whole
//! request's work, and about a sixth of its throughput on two cores. Most of it was the defaults' generality. The default
//! field formatter writes every name and `=` through a colour style (an empty one when
//! colour is off), about 1,200 instructions a field; the default clock formats all seven
//! parts of the date and time, with padding, for every line (about 2,300). Here a field is
//! one `write!`, and the date and time to the second are formatted once a second per
//! thread. The lines read the same, without colour on names (the level keeps its colour
//! on a terminal). The message's control characters are still escaped, as the default
//! escapes them, so that no logged text can send a terminal its control sequences.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{debug_fn, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormatFields;

/// The text format's field formatter: `name=value` pairs separated by spaces, the message
/// first as it is.
pub fn fields() -> impl for<'writer> FormatFields<'writer> + Send + Sync + 'static {
    debug_fn(field).delimited(" ")
}

/// One field. A `str` value is quoted and escaped (its `Debug`), as before; a `%` value
/// is written as it displays.
fn field(
    writer: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn fmt::Debug,
) -> fmt::Result {
    match field.name() {
        "message" => write!(Escaping(writer), "{value:?}"),
        name => {
            // The name and `=` as plain text: only the value takes the formatting machinery.
            writer.write_str(name.strip_prefix("r#").unwrap_or(name))?;
            writer.write_char('=')?;
            write!(writer, "{value:?}")
        }
    }
}

/// Writes through to `W`, escaping the control characters a terminal acts on (ESC, BEL,
/// BS, FF, DEL and the C1 range), as tracing-subscriber escapes a message. Text without
/// any, nearly all of it, is written in one piece.
struct Escaping<W>(W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let risky = |c: char| {
            matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if !text.contains(risky) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            if risky(c) {
                write!(self.0, "\\x{:02x}", u32::from(c))?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// RFC 3339 UTC timestamps with microseconds (`2026-11-30T13:06:00.123456Z`), as
/// tracing-subscriber's `SystemTime` writes them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timestamps;

thread_local! {
    /// The second last formatted on this thread and its text up to the seconds.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for Timestamps {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let second = since_epoch.as_secs();
        SECOND.with_borrow_mut(|(cached, text)| {
            if *cached != second {
                text.clear();
                write_second(text, second)?;
                *cached = second;
            }
            writer.write_str(text)
        })?;
        let mut micros = itoa::Buffer::new();
        let micros = micros.format(since_epoch.subsec_micros());
        writer.write_char('.')?;
        writer.write_str(&"000000"[micros.len()..])?;
        writer.write_str(micros)?;
        writer.write_char('Z')
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `second` after the epoch, in UTC.
fn write_second(out: &mut String, second: u64) -> fmt::Result {
    let at = i64::try_from(second)
        .ok()
        .and_then(|second| time::OffsetDateTime::from_unix_timestamp(second).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_the_default_clock_writes_them() {
        let mut ours = String::new();
        Timestamps
            .format_time(&mut Writer::new(&mut ours))
            .expect("ours");
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .expect("theirs");
        assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
        // The same second, unless the two calls straddled one.
        let parsed = |text: &str| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .expect(text)
        };
        assert!((parsed(&ours) - parsed(&theirs)).abs() < time::Duration::seconds(2));
        // Twice in the same second: the remembered part is the same.
        let mut again = String::new();
        Timestamps
            .format_time(&mut Writer::new(&mut again))
            .expect("again");
        assert_eq!(again.len(), ours.len());
    }

    #[test]
    fn a_known_second_is_written_in_utc() {
        let mut text = String::new();
        write_second(&mut text, 1_796_043_440).expect("second");
        assert_eq!(text, "2026-11-30T12:57:20"); // `date -u -d @1796043440`
        let mut text = String::new();
        write_second(&mut text, 0).expect("epoch");
        assert_eq!(text, "1970-01-01T00:00:00");
    }

    #[test]
    fn fields_are_name_equals_value_and_the_message_is_escaped() {
        /// Lines written into a shared buffer.
        #[derive(Clone)]
        struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Shared {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let written = Shared(Default::default());
        let writer = written.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(fields())
            .with_timer(Timestamps)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "ims_api::access",
                method = %"GET",
                route = "/tax-rates",
                status = 200u16,
                latency_ms = 0.25,
                r#type = "x",
                "request \x1b[31m"
            );
        });
        let line = String::from_utf8(written.0.lock().expect("lock").clone()).expect("utf-8");
        let (stamp, rest) = line.split_once(' ').expect("a timestamp first");
        assert_eq!(stamp.len(), "2026-11-30T13:06:00.123456Z".len(), "{line}");
        assert!(
            rest.ends_with(
                "INFO ims_api::access: request \\x1b[31m method=GET route=\"/tax-rates\" \
                 status=200 latency_ms=0.25 type=\"x\"\n"
            ),
            "{line}"
        );
        let mut text = String::new();
        Escaping(&mut text)
            .write_str("plain \x1b[31mred\x07 \u{9b}")
            .expect("write");
        assert_eq!(text, "plain \\x1b[31mred\\x07 \\x9b");
        let mut text = String::new();
        Escaping(&mut text)
            .write_str("nothing to escape: ünïcode")
            .expect("write");
        assert_eq!(text, "nothing to escape: ünïcode");
    }
}
