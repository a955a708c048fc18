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
        Ok(self.new_user(now, name, role, token_hash))
    }

    fn new_user(&mut self, now: u64, name: String, role: Role, token_hash: TokenHash) -> u64 {
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
        id
    }

    /// A node joined (the caller checked its join secret): its credential
    /// is an agent user named like it, made now, or given a new token when
    /// the node joins again (the old token stops working).
    pub(crate) fn join_node(
        &mut self,
        now: u64,
        node: &str,
        token_hash: TokenHash,
    ) -> Result<(), CommandError> {
        if !is_user_name(node) {
            return Err(CommandError::BadRequest(format!(
                "`{node}` cannot name a node that joins ({}): its credential is a user of that name",
                plain_name_rule(MAX_USER_NAME)
            )));
        }
        let existing = self
            .users
            .by_id
            .values()
            .find(|u| u.name == node)
            .map(|u| (u.id, u.role));
        match existing {
            None => {
                self.new_user(now, node.to_string(), Role::Agent, token_hash);
                Ok(())
            }
            Some((id, Role::Agent)) => {
                let old: Vec<TokenHash> = self
                    .users
                    .tokens
                    .iter()
                    .filter(|(_, p)| p.user_id == id)
                    .map(|(h, _)| *h)
                    .collect();
                for h in &old {
                    self.users.tokens.remove(h);
                }
                self.fx.revoked.extend(old);
                let principal = Principal {
                    user_id: id,
                    name: node.to_string(),
                    role: Role::Agent,
                };
                self.users.tokens.insert(token_hash, principal.clone());
                self.fx.tokens.push((token_hash, principal));
                self.fx.changes.push(Change::SetToken {
                    user_id: id,
                    token_hash,
                });
                Ok(())
            }
            Some(_) => Err(CommandError::Conflict(format!(
                "a user named `{node}` exists and is not a node; join under another name"
            ))),
        }
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
