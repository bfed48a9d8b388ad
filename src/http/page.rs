//! Cursor pagination on the wire: `?limit=N&cursor=C` in, `next_cursor` out.
//! A cursor is opaque to callers (base64url of the last row's time and key); a
//! malformed one, one of another list's kind, or a bad limit is a 400 in the
//! API's error shape. The status page's lists (deliveries too) use the same
//! [`PageQuery`] and [`encode`].

use super::HttpError;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use subkeeper_actors::ports::page::{DEFAULT_LIMIT, MAX_LIMIT};
use subkeeper_actors::ports::{Cursor, CursorKey, Page, PageRequest};

/// What a list's rows are keyed by, so a cursor of another list is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Sequence ids (attempts, audit, deliveries).
    Seq,
    /// UUIDs (providers, tokens).
    Uuid,
}

/// `?limit=&cursor=` of a list route.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page, at least 1; larger than 500 is capped at 500; default 50.
    #[param(value_type = Option<u32>, minimum = 1)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for, or a 400 naming what is wrong.
    pub fn request(&self, kind: KeyKind) -> Result<PageRequest, HttpError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.parse::<u64>() {
                Ok(0) | Err(_) => {
                    return Err(HttpError::BadRequest(format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT}"
                    )));
                }
                Ok(n) => u32::try_from(n.min(u64::from(MAX_LIMIT))).unwrap_or(MAX_LIMIT),
            },
        };
        let after = self
            .cursor
            .as_deref()
            .map(|raw| {
                decode(raw, kind).ok_or_else(|| {
                    HttpError::BadRequest(
                        "cursor is not one this list handed out (pass next_cursor as given)".into(),
                    )
                })
            })
            .transpose()?;
        Ok(PageRequest { after, limit })
    }
}

/// A page as the API answers it: the rows under `name`, and `next_cursor`.
pub fn json<T: Serialize>(name: &str, page: Page<T>) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    body.insert(
        name.to_owned(),
        serde_json::to_value(page.items).unwrap_or(serde_json::Value::Null),
    );
    body.insert(
        "next_cursor".into(),
        page.next
            .map(encode)
            .map_or(serde_json::Value::Null, Into::into),
    );
    serde_json::Value::Object(body)
}

/// The opaque form of a cursor.
pub fn encode(cursor: Cursor) -> String {
    let key = match cursor.key {
        CursorKey::Seq(id) => format!("s{id}"),
        CursorKey::Uuid(id) => format!("u{id}"),
    };
    let raw = format!(
        "{}|{key}",
        cursor.at.to_rfc3339_opts(SecondsFormat::Nanos, true)
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// A cursor back from its opaque form, if it is one of a `kind` list.
pub fn decode(raw: &str, kind: KeyKind) -> Option<Cursor> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (at, key) = text.split_once('|')?;
    let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    let key = match (kind, key.split_at_checked(1)?) {
        (KeyKind::Seq, ("s", id)) => CursorKey::Seq(id.parse().ok()?),
        (KeyKind::Uuid, ("u", id)) => CursorKey::Uuid(id.parse().ok()?),
        _ => return None,
    };
    Some(Cursor { at, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_a_400() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T05:10:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let seq = Cursor {
            at,
            key: CursorKey::Seq(42),
        };
        assert_eq!(decode(&encode(seq), KeyKind::Seq), Some(seq));
        // Another list's cursor, garbage, a bad limit: refused.
        assert_eq!(decode(&encode(seq), KeyKind::Uuid), None);
        for bad in ["", "!!!", "bm90IGEgY3Vyc29y", &encode(seq)[..10]] {
            let q = PageQuery {
                limit: None,
                cursor: Some(bad.into()),
            };
            assert!(
                matches!(q.request(KeyKind::Seq), Err(HttpError::BadRequest(_))),
                "{bad}"
            );
        }
        for (limit, ok) in [
            ("0", None),
            ("-1", None),
            ("x", None),
            ("7", Some(7)),
            ("100000", Some(MAX_LIMIT)),
        ] {
            let q = PageQuery {
                limit: Some(limit.into()),
                cursor: None,
            };
            assert_eq!(q.request(KeyKind::Seq).ok().map(|r| r.limit), ok, "{limit}");
        }
        assert_eq!(
            PageQuery::default().request(KeyKind::Uuid).unwrap().limit,
            DEFAULT_LIMIT
        );
    }
}
