//! Adding users and joining nodes: the token is made here (randomness is
//! IO) and shown once.

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

/// A node joins (the handle checked its join secret before sending this).
pub(super) fn join(ctx: &mut Ctx, node: String) -> Result<Reply, CommandError> {
    let token = generate_token()
        .map_err(|e| CommandError::Unavailable(format!("cannot make a token: {e}")))?;
    ctx.book.join_node(ctx.now, &node, hash_token(&token))?;
    Ok(Reply::Joined(vgrid_api::types::JoinResponse {
        node,
        token,
        // The handle adds the CA, which the book does not know.
        ca_pem: String::new(),
    }))
}

/// A new token for a user, shown this once; the old one stops working
/// when the round is committed.
pub(super) fn rotate(ctx: &mut Ctx, p: &Principal, name: String) -> Result<Reply, CommandError> {
    let token = generate_token()
        .map_err(|e| CommandError::Unavailable(format!("cannot make a token: {e}")))?;
    let (id, role) = ctx.book.rotate_token(p, &name, hash_token(&token))?;
    Ok(JobBook::user_added(id, name, role, token))
}
