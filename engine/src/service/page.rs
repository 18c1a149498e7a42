//! Pages of lists: the cursor a client sends back, and a page of only the items the caller
//! may see, read in batches so that hidden items neither shorten a page nor end the list.

use std::future::Future;

use jobdock_types::Page;

use super::{Result, ServiceError};
use crate::store::StoreError;

/// The position a numbered list's `next_cursor` gave, read back.
pub fn numeric_cursor(cursor: Option<&str>) -> Result<Option<i64>> {
    cursor
        .map(str::parse::<i64>)
        .transpose()
        .map_err(|_| ServiceError::invalid("cursor", "is not a cursor of this list"))
}

/// Up to `limit` items that `visible` lets through, newest first, read in batches by
/// `fetch(before, n)` from the position `cursor`; the next cursor is the position of the
/// last item looked at, so that a later page starts after the hidden ones too.
pub async fn visible<T, F, Fut>(
    cursor: Option<i64>,
    limit: usize,
    mut fetch: F,
    position: impl Fn(&T) -> i64,
    visible: impl Fn(&T) -> bool,
) -> Result<Page<T>>
where
    F: FnMut(Option<i64>, i64) -> Fut,
    Fut: Future<Output = Result<Vec<T>, StoreError>>,
{
    let mut items = Vec::new();
    let mut before = cursor;
    loop {
        let batch = fetch(before, limit as i64 + 1).await?;
        let exhausted = batch.len() <= limit;
        for item in batch {
            if items.len() == limit {
                return Ok(Page {
                    items,
                    next_cursor: before.map(|b| b.to_string()),
                });
            }
            before = Some(position(&item));
            if visible(&item) {
                items.push(item);
            }
        }
        if exhausted {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
    }
}
