//! The transports' side of the controller: sends commands to the actor and
//! waits for its answers.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;
use vgrid_api::types::{JoinRequest, JoinResponse, Principal, WaitResponse};
use vgrid_server::{Backend, Command, CommandError, Reply};
use vgrid_store::{TokenHash, hash_token};

pub(crate) type ReplyTx = oneshot::Sender<Result<Reply, CommandError>>;

/// What goes to the actor.
pub(crate) enum Msg {
    Command {
        principal: Principal,
        command: Command,
        reply: ReplyTx,
    },
    Stop,
}

/// Tokens known to the controller, by hash. Written by the actor after the
/// user is durable; read on every request.
pub(crate) type AuthMap = Arc<RwLock<HashMap<TokenHash, Principal>>>;

/// Talks to the controller's actor. Clone freely.
#[derive(Clone)]
pub struct ControllerHandle {
    pub(crate) tx: Sender<Msg>,
    pub(crate) auth: AuthMap,
    pub(crate) join: Option<Arc<crate::JoinConfig>>,
    pub(crate) store: Arc<vgrid_cas::Store>,
}

fn gone() -> CommandError {
    CommandError::Unavailable("the controller is not running".into())
}

impl ControllerHandle {
    async fn call(&self, principal: Principal, command: Command) -> Result<Reply, CommandError> {
        let rx = self.send(principal, command)?;
        rx.await.map_err(|_| gone())?
    }

    fn send(
        &self,
        principal: Principal,
        command: Command,
    ) -> Result<oneshot::Receiver<Result<Reply, CommandError>>, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Command {
                principal,
                command,
                reply,
            })
            .map_err(|_| gone())?;
        Ok(rx)
    }

    /// Asks the actor to stop after its current round.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// Equality of two hashes in time that does not depend on where they
/// differ.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Backend for ControllerHandle {
    fn store(&self) -> Option<Arc<vgrid_cas::Store>> {
        Some(self.store.clone())
    }

    async fn join(&self, request: JoinRequest) -> Result<JoinResponse, CommandError> {
        let Some(join) = &self.join else {
            return Err(CommandError::Forbidden(
                "this controller takes no joining nodes (it serves plain http); give the node an agent token instead".into(),
            ));
        };
        let given = *blake3::hash(request.secret.trim().as_bytes()).as_bytes();
        if !same_hash(&given, &join.secret_hash) {
            return Err(CommandError::Unauthorized(
                "the join token's secret is not this controller's (see `$VGRID_DATA_DIR/join-token` on the controller)".into(),
            ));
        }
        // A principal is needed to route the command; the join secret was
        // the credential, and the command names only the node.
        let principal = Principal {
            user_id: 0,
            name: request.node.clone(),
            role: vgrid_api::types::Role::Agent,
        };
        match self
            .call(principal, Command::JoinNode { node: request.node })
            .await?
        {
            Reply::Joined(mut answer) => {
                answer.ca_pem = join.ca_pem.clone();
                Ok(answer)
            }
            _ => Err(CommandError::Unavailable(
                "the controller gave an unexpected answer".into(),
            )),
        }
    }

    fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = hash_token(token);
        self.auth.read().ok()?.get(&hash).cloned()
    }

    async fn execute(&self, principal: Principal, command: Command) -> Result<Reply, CommandError> {
        match command {
            // Long waits are timed here, not in the actor: the actor parks
            // the reply and answers when there is something to say; if the
            // time runs out first, the parked reply is simply dropped.
            Command::WaitJob { id, wait_ms } => {
                let rx = self.send(principal.clone(), Command::WaitJob { id, wait_ms })?;
                match tokio::time::timeout(Duration::from_millis(wait_ms), rx).await {
                    Ok(answer) => answer.map_err(|_| gone())?,
                    Err(_) => match self.call(principal, Command::ShowJob { id }).await? {
                        Reply::Job(detail) => Ok(Reply::Waited(Box::new(WaitResponse {
                            ended: detail.job.state.is_terminal(),
                            job: detail.job,
                        }))),
                        other => Ok(other),
                    },
                }
            }
            Command::PollActions {
                node,
                after,
                wait_ms,
            } => {
                let rx = self.send(
                    principal,
                    Command::PollActions {
                        node,
                        after,
                        wait_ms,
                    },
                )?;
                match tokio::time::timeout(Duration::from_millis(wait_ms), rx).await {
                    Ok(answer) => answer.map_err(|_| gone())?,
                    // Actions not received are not acknowledged, so they are
                    // sent again on the next poll.
                    Err(_) => Ok(Reply::Actions(Vec::new())),
                }
            }
            command => self.call(principal, command).await,
        }
    }
}
