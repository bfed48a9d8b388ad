//! Cursor pagination shared by every list the admin API and the status page
//! serve (providers, attempts, audit, tokens, deliveries): a page is the rows
//! strictly after a cursor in a total order over `(time, key)`, so a row is
//! returned exactly once across pages however many rows are added meanwhile.
//! How a cursor is written on the wire (opaque to callers) is the HTTP layer's
//! business; the store only sees these values.

use super::StoreError;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The default page size.
pub const DEFAULT_LIMIT: u32 = 50;

/// The largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 500;

/// The key that breaks ties between rows of the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKey {
    /// A table whose rows have a sequence id (attempts, audit, deliveries).
    Seq(i64),
    /// A table whose rows have a UUID (providers, tokens).
    Uuid(Uuid),
}

/// Where the previous page ended: the last row's time and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The ordering time of the last row returned.
    pub at: DateTime<Utc>,
    /// Its key.
    pub key: CursorKey,
}

impl Cursor {
    /// The sequence key, if this cursor is over a sequence-keyed list.
    pub fn seq(&self) -> Option<i64> {
        match self.key {
            CursorKey::Seq(id) => Some(id),
            CursorKey::Uuid(_) => None,
        }
    }

    /// The UUID key, if this cursor is over a UUID-keyed list.
    pub fn uuid(&self) -> Option<Uuid> {
        match self.key {
            CursorKey::Uuid(id) => Some(id),
            CursorKey::Seq(_) => None,
        }
    }
}

/// Which page to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows after this one; `None`: the first page.
    pub after: Option<Cursor>,
    /// At most this many rows (1..=[`MAX_LIMIT`]).
    pub limit: u32,
}

impl PageRequest {
    /// The first page of `limit` rows (clamped to 1..=[`MAX_LIMIT`]).
    pub fn first(limit: u32) -> Self {
        Self {
            after: None,
            limit: limit.clamp(1, MAX_LIMIT),
        }
    }

    /// How many rows a store reads: one more than the page, to learn whether a
    /// next page exists.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_LIMIT)) + 1
    }

    /// The cursor's time and sequence key, for a sequence-keyed list; a cursor
    /// of a UUID-keyed list is refused (the HTTP layer refuses it first).
    pub fn after_seq(&self) -> Result<Option<(DateTime<Utc>, i64)>, StoreError> {
        self.after
            .map(|c| c.seq().map(|id| (c.at, id)).ok_or_else(another_list))
            .transpose()
    }

    /// The cursor's time and UUID key, for a UUID-keyed list; a cursor of a
    /// sequence-keyed list is refused.
    pub fn after_uuid(&self) -> Result<Option<(DateTime<Utc>, Uuid)>, StoreError> {
        self.after
            .map(|c| c.uuid().map(|id| (c.at, id)).ok_or_else(another_list))
            .transpose()
    }
}

fn another_list() -> StoreError {
    StoreError::Rejected("the cursor belongs to another list".into())
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(DEFAULT_LIMIT)
    }
}

/// One page of rows and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, in the list's order.
    pub items: Vec<T>,
    /// The cursor of the last row when more rows follow; `None` on the last page.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// A page from `rows` read with [`PageRequest::fetch`]: keeps `request.limit`
    /// of them, and a next cursor (from `cursor_of` the last kept row) only if
    /// the extra row was there.
    pub fn from_rows(
        mut rows: Vec<T>,
        request: &PageRequest,
        cursor_of: impl Fn(&T) -> Cursor,
    ) -> Self {
        let limit = request.limit.clamp(1, MAX_LIMIT) as usize;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Self { items: rows, next }
    }

    /// The same page with each row mapped.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_a_next_cursor_only_when_a_row_was_left_over() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
        let cursor = |s: &i64| Cursor {
            at: at(*s),
            key: CursorKey::Seq(*s),
        };
        let request = PageRequest::first(2);
        assert_eq!(request.fetch(), 3);
        let page = Page::from_rows(vec![1, 2, 3], &request, cursor);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next.and_then(|c| c.seq()), Some(2));
        let last = Page::from_rows(vec![1, 2], &request, cursor);
        assert_eq!(last.next, None);
        assert_eq!(PageRequest::first(10_000).limit, MAX_LIMIT);
        assert_eq!(PageRequest::first(0).limit, 1);
    }
}
