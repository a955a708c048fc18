//! Users and their tokens.

use vgrid_api::types::{Principal, Role};
use vgrid_server::{CommandError, Reply};
use vgrid_store::{Change, TokenHash, UserRecord};

use vgrid_model::limits::MAX_USER_NAME;
use vgrid_model::names::{is_user_name, plain_name_rule};

use super::JobBook;

impl JobBook {
    /// Adds a user whose token hashes to `token_hash` (the caller made the
    /// token: randomness is IO). Answers with the new user's id.
    pub(crate) fn add_user(
        &mut self,
        now: u64,
        p: &Principal,
        name: String,
        role: Role,
        token_hash: TokenHash,
    ) -> Result<u64, CommandError> {
        if p.role != Role::Admin {
            return Err(CommandError::Forbidden("only an admin adds users".into()));
        }
        if !is_user_name(&name) {
            return Err(CommandError::BadRequest(format!(
                "`{name}` is not a user name ({})",
                plain_name_rule(MAX_USER_NAME)
            )));
        }
        if self.users.names.contains(&name) {
            return Err(CommandError::Conflict(format!(
                "user `{name}` already exists"
            )));
        }
        let id = self.users.next_id;
        self.users.next_id += 1;
        let user = UserRecord {
            id,
            name: name.clone(),
            role,
            created_unix_ms: now as i64,
        };
        self.fx.changes.push(Change::AddUser {
            user: user.clone(),
            token_hash,
        });
        let principal = Principal {
            user_id: id,
            name: name.clone(),
            role,
        };
        self.users.tokens.insert(token_hash, principal.clone());
        self.fx.tokens.push((token_hash, principal));
        self.users.names.insert(name);
        self.users.by_id.insert(id, user);
        Ok(id)
    }

    /// Whether a command of `p` may act for node `node`: agents act only
    /// for the node of their name, admins for any.
    pub(crate) fn for_own_node(p: &Principal, node: &str) -> Result<(), CommandError> {
        if !matches!(p.role, Role::Agent | Role::Admin) {
            return Err(CommandError::Forbidden("only agents do this".into()));
        }
        if p.role == Role::Agent && p.name != node {
            return Err(CommandError::Forbidden(format!(
                "this agent token belongs to node `{}`; it cannot act for node `{node}`",
                p.name
            )));
        }
        Ok(())
    }

    /// The answer to an added user; the token is shown this once.
    pub(crate) fn user_added(id: u64, name: String, role: Role, token: String) -> Reply {
        Reply::UserAdded(vgrid_api::types::AddUserResponse {
            id,
            name,
            role,
            token,
        })
    }
}
