//! The transports' side of the controller: sends commands to the actor and
//! waits for its answers.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::oneshot;
use vgrid_api::types::{Principal, WaitResponse};
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

impl Backend for ControllerHandle {
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
