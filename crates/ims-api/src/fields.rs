//! Helpers shared by the domain areas for reading request fields: ids in paths and bodies,
//! names and optional text, and PATCH bodies where an absent field and `null` differ.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use uuid::Uuid;

use crate::db::Db;
use crate::error::{ApiError, ApiResult, FieldErrors, Validator};

/// Longest name (after trimming) of any catalog row.
pub const MAX_NAME_CHARS: usize = 200;

/// For PATCH fields: absent → `None` (unchanged), `null` → `Some(None)`, a value →
/// `Some(Some(v))`. Use with `#[serde(default, deserialize_with = "fields::patch")]`; the
/// `default` is what makes an absent field `None`.
pub fn patch<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The new value of a PATCH field that cannot be null: the current value when absent; an
/// error in `v` when `null`.
pub fn merge_required<T>(
    patched: Option<Option<T>>,
    current: T,
    field: &str,
    v: &mut Validator,
) -> T {
    match patched {
        None => current,
        Some(Some(value)) => value,
        Some(None) => {
            v.check(false, field, "must not be null");
            current
        }
    }
}

/// The new value of a nullable PATCH field: the current value when absent.
pub fn merge_nullable<T>(patched: Option<Option<T>>, current: Option<T>) -> Option<T> {
    patched.unwrap_or(current)
}

/// A path id, which must be a UUID written the way the API writes ids: lower-case and
/// hyphenated. Anything else cannot name a row, so it is a 404 like an unknown id. Other
/// spellings of the same UUID (upper case, braces, `urn:uuid:`, no hyphens) are refused
/// rather than read as it: each would be another URL of the row, cached apart from it, and
/// the row's writes invalidate its one URL. (The row routes' [`Id`] redirects them to the
/// canonical URL before this is reached; a session's id is refused.)
pub fn path_id(raw: &str, what: &str) -> ApiResult<String> {
    canonical_id(raw).ok_or_else(|| not_found(what))
}

/// `raw` if it is a UUID in the API's own spelling (lower-case, hyphenated).
fn canonical_id(raw: &str) -> Option<String> {
    Uuid::try_parse(raw)
        .ok()
        .filter(|id| id.hyphenated().to_string() == raw)
        .map(|_| raw.to_string())
}

/// One row of the collection a route template is under, in words, for problems and the
/// document alike: `/tax-rates/{id}` → `tax rate`, `/categories` → `category`.
pub fn row_noun(route: &str) -> String {
    let collection = route.split("/{").next().unwrap_or(route);
    let words = collection
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .replace('-', " ");
    match words.strip_suffix("ies") {
        Some(stem) => format!("{stem}y"),
        None => words.strip_suffix('s').unwrap_or(&words).to_string(),
    }
}

/// The `{id}` of a row's route (`/tax-rates/{id}`, `/invoices/{id}/payments`), read from the
/// URI as the client wrote it and checked by [`canonical_id`]; anything else is the 404 of
/// an unknown row, named after the route's collection ([`row_noun`]) as the document's 404
/// is. The segment is taken undecoded on purpose: `%61` for `a` would name the same row
/// under another URL, and so another cache entry that the row's writes do not invalidate.
/// For the same reason a UUID written another way (upper case, as RFC 9562 allows on
/// input; no hyphens; braces) is not served under that URL but redirected (308) to the
/// row's own, which a client follows with the same method and body: answered as a 404, it
/// told a client that a row it had just created did not exist (found by a probe).
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map_or("", |route| route.as_str());
        let raw = route
            .split('/')
            .position(|segment| segment == "{id}")
            .and_then(|at| parts.uri.path().split('/').nth(at))
            .unwrap_or_default();
        // The noun is only worded for the 404: a valid id costs no string.
        if let Some(id) = canonical_id(raw) {
            return Ok(Self(id));
        }
        match Uuid::try_parse(raw) {
            Ok(id) => Err(ApiError::Moved(canonical_target(&parts.uri, raw, &id))),
            Err(_) => Err(not_found(&row_noun(route))),
        }
    }
}

/// `uri`'s path and query with the segment `raw` written as `id`'s canonical form.
fn canonical_target(uri: &axum::http::Uri, raw: &str, id: &Uuid) -> String {
    let canonical = id.hyphenated().to_string();
    let path = uri
        .path()
        .split('/')
        .map(|segment| {
            if segment == raw {
                canonical.as_str()
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// The 404 for an id that is unknown in the caller's organization.
pub fn not_found(what: &str) -> ApiError {
    ApiError::NotFound(format!("no such {what}"))
}

/// A trimmed name of 1..=200 characters; problems are recorded in `v`.
pub fn name(raw: &str, field: &str, v: &mut Validator) -> String {
    required_text(raw, field, MAX_NAME_CHARS, v)
}

/// Trimmed, non-empty text of at most `max` characters; problems are recorded in `v`.
pub fn required_text(raw: &str, field: &str, max: usize, v: &mut Validator) -> String {
    let value = raw.trim();
    v.check(!value.is_empty(), field, "must not be empty");
    // The length as sent, as the document's `maxLength` counts it.
    v.check(
        raw.chars().count() <= max,
        field,
        &format!("must be at most {max} characters"),
    );
    value.to_string()
}

/// Optional text: trimmed, and blank counts as absent (`None`), so clients that send `""`
/// for an empty form field clear it rather than storing whitespace.
pub fn optional_text(
    raw: Option<String>,
    field: &str,
    max: usize,
    v: &mut Validator,
) -> Option<String> {
    let raw = raw?;
    // The length as sent, as the document's `maxLength` counts it.
    v.check(
        raw.chars().count() <= max,
        field,
        &format!("must be at most {max} characters"),
    );
    let value = raw.trim().to_string();
    (!value.is_empty()).then_some(value)
}

/// An optional reference to another row in a body, in canonical form; a non-UUID is
/// recorded in `v`.
pub fn reference(raw: Option<String>, field: &str, v: &mut Validator) -> Option<String> {
    let raw = raw?;
    match Uuid::parse_str(raw.trim()) {
        Ok(id) => Some(id.to_string()),
        Err(_) => {
            v.check(false, field, "must be a UUID");
            None
        }
    }
}

/// A `LIKE` pattern matching `search` as a substring, with `%`, `_` and `\\` escaped; use
/// with `ESCAPE '\\'`. Compare as `LOWER(column) LIKE LOWER($n) ESCAPE '\\'`: PostgreSQL's
/// `LIKE` is case-sensitive and SQLite's only ignores ASCII case, so both sides are lowered.
pub fn like_pattern(search: &str) -> String {
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The 422 message for text containing U+0000. PostgreSQL cannot store NUL in `TEXT` (its
/// UTF-8 accepts every other code point, and Rust strings cannot hold lone surrogates), while
/// SQLite would; refusing it up front gives one answer on both engines instead of a 500 on one.
pub const NUL_MESSAGE: &str = "must not contain NUL characters";

/// Whether a JSON text may carry a NUL. Valid JSON can write U+0000 only as the escape
/// `\u0000`: raw control characters are a syntax error, and `0` has no upper case. The escape
/// is real only after an odd run of backslashes; `\\u0000` is an escaped backslash followed
/// by the text `u0000`. Backslashes occur only inside strings, so for valid JSON the answer
/// is exact; for invalid JSON it does not matter, since the parse refuses the body anyway.
/// Linear: each hit's backward scan stops at the previous hit's last `0`.
pub fn json_may_contain_nul(body: &[u8]) -> bool {
    memchr::memmem::find_iter(body, br"\u0000").any(|at| {
        let run = body[..=at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        run % 2 == 1
    })
}

/// Every string in `value` that contains NUL, keyed by its path spelled as validation errors
/// spell body fields (`name`, `lines[0].itemId`; `body` for a top-level string). Object keys
/// are not checked: an unknown key is ignored and no known key contains NUL.
pub fn json_nul_errors(value: &Value) -> FieldErrors {
    fn walk(value: &Value, path: &mut String, errors: &mut FieldErrors) {
        let len = path.len();
        match value {
            Value::String(text) if text.contains('\0') => {
                let field = if path.is_empty() { "body" } else { path };
                record_nul(errors, field);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if path.is_empty() {
                        path.push_str("body");
                    }
                    path.push_str(&format!("[{i}]"));
                    walk(item, path, errors);
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    walk(item, path, errors);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut errors = FieldErrors::new();
    walk(value, &mut String::new(), &mut errors);
    errors
}

/// Every query parameter whose decoded value contains NUL, by its decoded name. A URI cannot
/// carry a raw NUL (hyper refuses control characters in the request target), so without
/// `%00` there is nothing to decode. Names are not checked, like body keys.
pub fn query_nul_errors(query: &str) -> FieldErrors {
    let mut errors = FieldErrors::new();
    if !query.contains("%00") {
        return errors;
    }
    // The same decoding axum's `Query` (serde_urlencoded) applies, so the names match the
    // parameters the handler sees.
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if value.contains('\0') {
            record_nul(&mut errors, &name);
        }
    }
    errors
}

fn record_nul(errors: &mut FieldErrors, field: &str) {
    let messages = errors.entry(field.to_string()).or_default();
    if messages.is_empty() {
        messages.push(NUL_MESSAGE.to_string());
    }
}

/// Tables a body may refer to; a closed set, so a table name is never built from input.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    /// `categories`.
    Categories,
    /// `tax_rates`.
    TaxRates,
    /// `items`.
    Items,
    /// `warehouses`.
    Warehouses,
    /// `contacts` of type customer.
    Customers,
    /// `contacts` of type vendor.
    Vendors,
}

impl Table {
    fn exists_sql(self) -> &'static str {
        match self {
            Self::Categories => {
                "SELECT COUNT(*) FROM categories WHERE organization_id = $1 AND id = $2"
            }
            Self::TaxRates => {
                "SELECT COUNT(*) FROM tax_rates WHERE organization_id = $1 AND id = $2"
            }
            Self::Items => "SELECT COUNT(*) FROM items WHERE organization_id = $1 AND id = $2",
            Self::Warehouses => {
                "SELECT COUNT(*) FROM warehouses WHERE organization_id = $1 AND id = $2"
            }
            Self::Customers => {
                "SELECT COUNT(*) FROM contacts
                 WHERE organization_id = $1 AND id = $2 AND contact_type = 'customer'"
            }
            Self::Vendors => {
                "SELECT COUNT(*) FROM contacts
                 WHERE organization_id = $1 AND id = $2 AND contact_type = 'vendor'"
            }
        }
    }
}

/// Records an error in `v` unless `id` (when given) is a row of `table` in `org_id`. Ids of
/// other organizations get the same answer as unknown ids, so they reveal nothing.
pub async fn check_reference(
    db: &Db,
    table: Table,
    org_id: &str,
    id: Option<&str>,
    field: &str,
    v: &mut Validator,
) -> ApiResult<()> {
    let Some(id) = id else { return Ok(()) };
    let count: i64 = sqlx::query_scalar(table.exists_sql())
        .bind(org_id)
        .bind(id)
        .fetch_one(db.pool())
        .await?;
    v.check(count > 0, field, "does not exist");
    Ok(())
}

/// Checks again, inside a write's transaction, that `id` is still a contact of the kind
/// `table` names (customers, vendors), and holds its row until the write commits: a contact
/// whose type changed between the check before the transaction and the write gave orders
/// and invoices a vendor as customer (two concurrent requests, found by a black-box probe).
/// A concurrent change of the type waits for this write, then sees its order and is a 409;
/// one that came first makes this a 422 on `field`. Other tables: nothing to hold (a row
/// deleted meanwhile is caught by its foreign key).
pub async fn hold_contact(
    tx: &mut crate::db::WriteTx,
    table: Table,
    org_id: &str,
    id: &str,
    field: &str,
) -> ApiResult<()> {
    let contact_type = match table {
        Table::Customers => "customer",
        Table::Vendors => "vendor",
        _ => return Ok(()),
    };
    // A no-op `UPDATE`: the row lock both engines understand (SQLite's write lock is held
    // already).
    let held = sqlx::query(
        "UPDATE contacts SET updated_at = updated_at
         WHERE organization_id = $1 AND id = $2 AND contact_type = $3",
    )
    .bind(org_id)
    .bind(id)
    .bind(contact_type)
    .execute(&mut **tx)
    .await?;
    if held.rows_affected() == 0 {
        return Err(ApiError::field(field, "does not exist"));
    }
    Ok(())
}

/// Deletes the row named by the path id `raw_id` with `delete_sql` (fixed SQL of the form
/// `DELETE FROM t WHERE organization_id = $1 AND id = $2`): 404 when it is not the caller's,
/// 409 when other rows still refer to it.
pub async fn delete_owned(
    db: &Db,
    delete_sql: &str,
    org_id: &str,
    raw_id: &str,
    what: &str,
) -> ApiResult<()> {
    let id = path_id(raw_id, what)?;
    let deleted = db
        .execute_write(sqlx::query(delete_sql).bind(org_id).bind(&id))
        .await
        .map_err(|e| in_use(e, what))?;
    if deleted.rows_affected() == 0 {
        return Err(not_found(what));
    }
    Ok(())
}

/// A 409 for a delete that others still depend on, when `e` is a foreign-key violation.
pub fn in_use(e: sqlx::Error, what: &str) -> ApiError {
    if crate::db::is_foreign_key_violation(&e) {
        ApiError::Conflict(format!("this {what} is still referred to by other records"))
    } else {
        e.into()
    }
}

/// Maps a write's foreign-key violation (a referenced row deleted between our check and the
/// write) to a 409 rather than a 500.
pub fn reference_gone(e: sqlx::Error) -> ApiError {
    if crate::db::is_foreign_key_violation(&e) {
        ApiError::Conflict("a referenced record was deleted meanwhile; try again".into())
    } else {
        e.into()
    }
}

/// White space as the server counts it (`char::is_whitespace`, `str::trim`: Unicode's
/// `White_Space`), as the inside of a regex character class. The document's patterns are
/// ECMAScript regexes (JSON Schema), whose `\s` is another set: it takes U+FEFF and leaves
/// out U+0085, so a pattern written with `\s` documented strings the server refuses
/// (schemathesis found an email with U+0085 that the pattern accepted and the server
/// refused with 422).
macro_rules! white_space {
    () => {
        r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// What the server takes as not blank: at least one character that is not white space
/// (as `str::trim` counts it), as a JSON Schema `pattern`.
const NOT_BLANK_PATTERN: &str = concat!("[^", white_space!(), "]");

/// A required text of at most `max` characters that is not blank, in the document (for a
/// PATCH field too: never `null`).
pub fn not_blank(max: usize) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(NOT_BLANK_PATTERN))
        .build()
}

/// The document's schema of a name (1 to [`MAX_NAME_CHARS`] characters, not blank).
pub fn name_schema() -> utoipa::openapi::Object {
    not_blank(MAX_NAME_CHARS)
}

/// [`EMAIL_PATTERN`] without its anchors.
macro_rules! email_shape {
    () => {
        concat!(
            "[^@",
            white_space!(),
            "]+@[^@.",
            white_space!(),
            "][^@",
            white_space!(),
            r"]*\.[^@",
            white_space!(),
            "]*[^@.",
            white_space!(),
            "]"
        )
    };
}

/// What [`looks_like_email`] accepts, as the document's pattern for email fields.
pub const EMAIL_PATTERN: &str = concat!("^", email_shape!(), "$");

/// [`EMAIL_PATTERN`] or the empty string: an optional email (a contact's).
pub const OPTIONAL_EMAIL_PATTERN: &str = concat!("^(", email_shape!(), ")?$");

/// Most characters of an email address (RFC 5321's path limit, less its brackets).
pub const MAX_EMAIL_CHARS: usize = 254;

/// An email field in the document: [`EMAIL_PATTERN`], at most [`MAX_EMAIL_CHARS`].
pub fn email_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .max_length(Some(MAX_EMAIL_CHARS))
        .pattern(Some(EMAIL_PATTERN))
        .build()
}

/// An optional email in the document (a contact's): [`OPTIONAL_EMAIL_PATTERN`], at most
/// [`MAX_EMAIL_CHARS`], or `null`.
pub fn optional_email_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::String,
            utoipa::openapi::Type::Null,
        ]))
        .max_length(Some(MAX_EMAIL_CHARS))
        .pattern(Some(OPTIONAL_EMAIL_PATTERN))
        .build()
}

/// An email to sign in with: [`EMAIL_PATTERN`], any length (a longer one is no account's,
/// and is answered as wrong credentials).
pub fn login_email_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(EMAIL_PATTERN))
        .build()
}

/// A loose shape check: one `@` with something on each side, a dot inside the domain (not
/// at either end), no whitespace: exactly [`EMAIL_PATTERN`]. Real validation is delivering
/// mail; this only catches obvious typos.
pub fn looks_like_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    /// The document's patterns, run as its clients run them (an ECMAScript regex engine),
    /// accept exactly what the server accepts, around every character the two regex
    /// dialects' white space could disagree on, and every Unicode `White_Space` character.
    #[test]
    fn the_documented_patterns_accept_what_the_server_accepts() {
        let email = regress::Regex::new(super::EMAIL_PATTERN).expect("email pattern");
        let optional =
            regress::Regex::new(super::OPTIONAL_EMAIL_PATTERN).expect("optional email pattern");
        assert!(optional.find("").is_some(), "an empty optional email");
        let not_blank = regress::Regex::new(super::NOT_BLANK_PATTERN).expect("not-blank pattern");
        let mut odd: Vec<char> = (0..0x3001u32)
            .chain([0xfeff, 0x1f600])
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace() || c.is_control() || !c.is_alphanumeric())
            .collect();
        odd.extend(['a', '.', '@', 'é']);
        for c in odd {
            for text in [
                format!("a{c}b@c.de"),
                format!("ab@c{c}.de"),
                format!("ab@c.d{c}e"),
                format!("{c}ab@c.de"),
                format!("ab@c.de{c}"),
                format!("ab@{c}c.de"),
            ] {
                for pattern in [&email, &optional] {
                    assert_eq!(
                        pattern.find(&text).is_some(),
                        super::looks_like_email(&text),
                        "{text:?} (U+{:04X})",
                        c as u32
                    );
                }
            }
            let text = format!("{c}{c}");
            assert_eq!(
                not_blank.find(&text).is_some(),
                !text.trim().is_empty(),
                "{text:?} (U+{:04X})",
                c as u32
            );
        }
    }

    #[test]
    fn emails_need_one_at_and_a_dot_inside_the_domain() {
        for ok in ["a@b.co", "x.y+z@mail.example.org", "a@b..c"] {
            assert!(super::looks_like_email(ok), "{ok}");
        }
        for bad in [
            "a@b", "@b.co", "a b@c.co", "a@.b", "a@b.", "a@b@c.d", " a@b.co",
        ] {
            assert!(!super::looks_like_email(bad), "{bad}");
        }
    }

    use super::*;

    #[derive(Deserialize)]
    struct P {
        #[serde(default, deserialize_with = "patch")]
        a: Option<Option<i64>>,
    }

    #[test]
    fn absent_null_and_value_differ() {
        let p = |s: &str| serde_json::from_str::<P>(s).map(|p| p.a).ok();
        assert_eq!(p("{}"), Some(None));
        assert_eq!(p(r#"{"a":null}"#), Some(Some(None)));
        assert_eq!(p(r#"{"a":5}"#), Some(Some(Some(5))));
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        assert!(json_may_contain_nul(br#"{"a":"x\u0000y"}"#));
        assert!(json_may_contain_nul(br#"\u0000"#));
        // An escaped backslash, then the text "u0000": no NUL.
        assert!(!json_may_contain_nul(br#"{"a":"x\\u0000y"}"#));
        // An escaped backslash, then a real escape.
        assert!(json_may_contain_nul(br#"{"a":"\\\u0000"}"#));
        assert!(!json_may_contain_nul(br#"{"a":"\\\\u0000"}"#));
        // A later real escape after an escaped one still counts.
        assert!(json_may_contain_nul(br#"{"a":"\\u0000","b":"\u0000"}"#));
        assert!(!json_may_contain_nul(br#"{"a":"u0000 \u0001 \u0010"}"#));
        assert!(!json_may_contain_nul(b""));
        // The claims the scan rests on: serde_json decodes only the odd-run form to NUL and
        // refuses a raw NUL.
        let decoded = |s: &str| serde_json::from_str::<String>(s).ok();
        assert_eq!(decoded(r#""\u0000""#).as_deref(), Some("\0"));
        assert_eq!(decoded(r#""\\u0000""#).as_deref(), Some("\\u0000"));
        assert_eq!(decoded("\"\0\""), None);
    }

    #[test]
    fn nul_paths_are_named_like_validation_fields() {
        let body = serde_json::json!({
            "name": "a\0b",
            "notes": "fine",
            "lines": [{"itemId": "ok"}, {"itemId": "x\0", "n": ["\0"]}],
            "nested": {"deep": "\0"},
            "a\0key": "fine",
        });
        let errors = json_nul_errors(&body);
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["lines[1].itemId", "lines[1].n[0]", "name", "nested.deep"]
        );
        assert_eq!(errors["name"], [NUL_MESSAGE]);
        assert_eq!(
            json_nul_errors(&serde_json::json!("\0"))
                .keys()
                .collect::<Vec<_>>(),
            ["body"]
        );
        assert_eq!(
            json_nul_errors(&serde_json::json!(["\0"]))
                .keys()
                .collect::<Vec<_>>(),
            ["body[0]"]
        );
    }

    #[test]
    fn nul_query_values_are_named_by_parameter() {
        let errors = query_nul_errors("search=a%00b&sort=name&type=%00&type=%00&x%00=1");
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(fields, ["search", "type"]);
        assert_eq!(errors["type"], [NUL_MESSAGE]);
        assert!(query_nul_errors("search=a%2500b").is_empty());
        assert!(query_nul_errors("").is_empty());
    }

    #[test]
    fn path_ids_are_only_the_canonical_spelling() {
        let id = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        assert_eq!(path_id(id, "x").ok().as_deref(), Some(id));
        for other in [
            "6F9619FF-8B86-D011-B42D-00C04FC964FF",
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
            "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "6f9619ff8b86d011b42d00c04fc964ff",
            " 6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "nope",
        ] {
            assert!(path_id(other, "x").is_err(), "{other}");
        }
    }

    #[test]
    fn a_row_is_named_after_its_collection() {
        assert_eq!(row_noun("/tax-rates/{id}"), "tax rate");
        assert_eq!(row_noun("/categories/{id}"), "category");
        assert_eq!(row_noun("/invoices/{id}/payments"), "invoice");
        assert_eq!(row_noun("/sales-orders/{id}/fulfil"), "sales order");
        assert_eq!(row_noun("/sales-orders"), "sales order");
    }
}
