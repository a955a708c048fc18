//! `/metrics`: the controller's series (see [`crate::metrics`]), for
//! admins only.

use vgrid_api::types::{Principal, Role};
use vgrid_server::{CommandError, Reply};

use super::Ctx;

pub(super) fn metrics(ctx: &Ctx, p: &Principal) -> Result<Reply, CommandError> {
    if p.role != Role::Admin {
        return Err(CommandError::Forbidden(
            "only an admin reads metrics".into(),
        ));
    }
    Ok(Reply::Metrics(ctx.metrics.render(ctx.book)))
}
