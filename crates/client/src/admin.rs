//! The administrators' calls: drain, resume and forget nodes; list and
//! remove users; rotate and revoke tokens.

use reqwest::Method;
use vgrid_api::types::{AddUserResponse, DrainRequest, NodeView, UserView};

use crate::{Client, ClientError};

/// A name as one path segment: anything but letters, digits, `_` and `-`
/// is percent-encoded, so no name can reach another route (the server
/// checks names).
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// Drains a node: nothing new is placed there, its jobs run on.
    pub async fn drain_node(
        &self,
        node: &str,
        reason: Option<String>,
    ) -> Result<NodeView, ClientError> {
        let path = format!("/v1/nodes/{}/drain", segment(node));
        self.json(
            self.request(Method::POST, &path)
                .json(&DrainRequest { reason }),
        )
        .await
    }

    /// Puts a drained node back in service.
    pub async fn resume_node(&self, node: &str) -> Result<NodeView, ClientError> {
        let path = format!("/v1/nodes/{}/resume", segment(node));
        self.json(self.request(Method::POST, &path)).await
    }

    /// Forgets a drained or lost node that runs nothing.
    pub async fn remove_node(&self, node: &str) -> Result<(), ClientError> {
        let path = format!("/v1/nodes/{}", segment(node));
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// The users (admin).
    pub async fn users(&self) -> Result<Vec<UserView>, ClientError> {
        self.json(self.request(Method::GET, "/v1/users")).await
    }

    /// Removes a user whose jobs have all ended (admin).
    pub async fn remove_user(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/users/{}", segment(name));
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// Gives the user a new token, shown this once; the old one stops
    /// working.
    pub async fn rotate_token(&self, name: &str) -> Result<AddUserResponse, ClientError> {
        let path = format!("/v1/users/{}/token", segment(name));
        self.json(self.request(Method::POST, &path)).await
    }

    /// The user's token stops working (admin).
    pub async fn revoke_token(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/users/{}/token", segment(name));
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_stay_one_path_segment() {
        assert_eq!(super::segment("node-1_a"), "node-1_a");
        assert_eq!(super::segment("a/../b"), "a%2F%2E%2E%2Fb");
        assert_eq!(super::segment("é"), "%C3%A9");
    }
}
