//! Adding users: the token is made here (randomness is IO) and shown once.

use vgrid_api::types::{Principal, Role};
use vgrid_server::{CommandError, Reply};
use vgrid_store::{generate_token, hash_token};

use super::Ctx;
use crate::book::JobBook;

pub(super) fn add(
    ctx: &mut Ctx,
    p: &Principal,
    name: String,
    role: Role,
) -> Result<Reply, CommandError> {
    let token = generate_token()
        .map_err(|e| CommandError::Unavailable(format!("cannot make a token: {e}")))?;
    let id = ctx
        .book
        .add_user(ctx.now, p, name.clone(), role, hash_token(&token))?;
    Ok(JobBook::user_added(id, name, role, token))
}
