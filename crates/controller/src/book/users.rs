//! Users and their tokens.

use vgrid_api::types::{Principal, Role, UserView};
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
            removed_unix_ms: None,
            token_revoked_unix_ms: None,
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
            .map(|u| (u.id, u.role, u.removed_unix_ms.is_some()));
        match existing {
            Some((_, _, true)) => Err(CommandError::Conflict(format!(
                "the user `{node}` was removed and its name is not given again; join under another name"
            ))),
            None => {
                self.new_user(now, node.to_string(), Role::Agent, token_hash);
                Ok(())
            }
            Some((id, Role::Agent, false)) => {
                self.set_token(id, token_hash);
                Ok(())
            }
            Some(_) => Err(CommandError::Conflict(format!(
                "a user named `{node}` exists and is not a node; join under another name"
            ))),
        }
    }

    /// Gives user `id` the token hashing to `token_hash`; their old one
    /// stops working once the round is committed.
    fn set_token(&mut self, id: u64, token_hash: TokenHash) {
        self.drop_tokens(id);
        let Some(user) = self.users.by_id.get_mut(&id) else {
            return;
        };
        user.token_revoked_unix_ms = None;
        let principal = Principal {
            user_id: id,
            name: user.name.clone(),
            role: user.role,
        };
        self.users.tokens.insert(token_hash, principal.clone());
        self.fx.tokens.push((token_hash, principal));
        self.fx.changes.push(Change::SetToken {
            user_id: id,
            token_hash,
        });
    }

    /// Forgets user `id`'s tokens in memory (the caller records why).
    fn drop_tokens(&mut self, id: u64) {
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
    }

    /// The user named `name`, unless removed.
    fn user_named(&self, name: &str) -> Result<&UserRecord, CommandError> {
        self.users
            .by_id
            .values()
            .find(|u| u.name == name && u.removed_unix_ms.is_none())
            .ok_or_else(|| CommandError::NotFound(format!("user `{name}` does not exist")))
    }

    /// Jobs of user `id` that have not ended, by id.
    fn active_jobs(&self, id: u64) -> Vec<u64> {
        self.jobs
            .values()
            .filter(|j| j.rec.owner == id && !j.rec.state.is_terminal())
            .map(|j| j.rec.id)
            .collect()
    }

    /// The users (not removed ones), never their tokens (admin).
    pub(crate) fn list_users(&self, p: &Principal) -> Result<Reply, CommandError> {
        if p.role != Role::Admin {
            return Err(CommandError::Forbidden("only an admin lists users".into()));
        }
        let mut users: Vec<UserView> = self
            .users
            .by_id
            .values()
            .filter(|u| u.removed_unix_ms.is_none())
            .map(|u| UserView {
                id: u.id,
                name: u.name.clone(),
                role: u.role,
                created_unix_ms: u.created_unix_ms,
                token_revoked_unix_ms: u.token_revoked_unix_ms,
                active_jobs: u32::try_from(self.active_jobs(u.id).len()).unwrap_or(u32::MAX),
            })
            .collect();
        users.sort_by_key(|u| u.id);
        Ok(Reply::Users(users))
    }

    /// Removes a user whose jobs have all ended (admin). Their token stops
    /// working; their record stays as the owner of their ended jobs, and
    /// their name is never given again: store names such as
    /// `data/<user>/` are by name, so a new user of that name would reach
    /// the old one's data.
    pub(crate) fn remove_user(
        &mut self,
        now: u64,
        p: &Principal,
        name: &str,
    ) -> Result<Reply, CommandError> {
        if p.role != Role::Admin {
            return Err(CommandError::Forbidden(
                "only an admin removes users".into(),
            ));
        }
        let id = self.user_named(name)?.id;
        if id == p.user_id {
            return Err(CommandError::Conflict(
                "you cannot remove the user you act as".into(),
            ));
        }
        let active = self.active_jobs(id);
        if !active.is_empty() {
            let list: Vec<String> = active.iter().map(u64::to_string).collect();
            return Err(CommandError::Conflict(format!(
                "user `{name}` has {} job(s) that have not ended ({}): cancel them first (`vgrid cancel {}`)",
                active.len(),
                list.join(", "),
                list.join(" ")
            )));
        }
        self.drop_tokens(id);
        if let Some(u) = self.users.by_id.get_mut(&id) {
            u.removed_unix_ms = Some(now as i64);
        }
        self.fx.changes.push(Change::RemoveUser {
            user_id: id,
            unix_ms: now as i64,
        });
        Ok(Reply::Done)
    }

    /// Gives a user a new token, made by the caller (randomness is IO); the
    /// old one stops working. An admin rotates anyone's, a user their own.
    pub(crate) fn rotate_token(
        &mut self,
        p: &Principal,
        name: &str,
        token_hash: TokenHash,
    ) -> Result<(u64, Role), CommandError> {
        let user = self.user_named(name)?;
        if p.role != Role::Admin && user.id != p.user_id {
            return Err(CommandError::Forbidden(
                "only an admin rotates another user's token".into(),
            ));
        }
        let (id, role) = (user.id, user.role);
        self.set_token(id, token_hash);
        Ok((id, role))
    }

    /// The user's token stops working; none does until a rotation (admin).
    pub(crate) fn revoke_token(
        &mut self,
        now: u64,
        p: &Principal,
        name: &str,
    ) -> Result<Reply, CommandError> {
        if p.role != Role::Admin {
            return Err(CommandError::Forbidden(
                "only an admin revokes tokens".into(),
            ));
        }
        let id = self.user_named(name)?.id;
        if id == p.user_id {
            return Err(CommandError::Conflict(
                "you cannot revoke the token you act with; rotate it instead".into(),
            ));
        }
        self.drop_tokens(id);
        if let Some(u) = self.users.by_id.get_mut(&id) {
            u.token_revoked_unix_ms = Some(now as i64);
        }
        self.fx.changes.push(Change::RevokeToken {
            user_id: id,
            unix_ms: now as i64,
        });
        Ok(Reply::Done)
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
