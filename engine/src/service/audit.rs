//! The audit log seen from the API: who changed what, newest first.

use jobdock_types::{AuditEntry, Page};

use super::{page, Ctx, Result};
use crate::store::AuditFilter;

/// A page of the audit log, newest first, of this action and target when given.
pub async fn list(
    ctx: &Ctx,
    action: Option<&str>,
    target: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page<AuditEntry>> {
    let filter = AuditFilter {
        before_id: page::numeric_cursor(cursor)?,
        action,
        target,
    };
    let mut items = ctx.store.audit(filter, limit as i64 + 1).await?;
    let more = items.len() > limit;
    items.truncate(limit);
    Ok(Page {
        next_cursor: if more {
            items.last().map(|e| e.id.to_string())
        } else {
            None
        },
        items,
    })
}
