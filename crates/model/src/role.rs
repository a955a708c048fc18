//! What a token may do.

use serde::{Deserialize, Serialize};

/// A user's role, on the wire, in the database and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sees and controls only their own jobs.
    User,
    /// Sees and controls every job; adds users.
    Admin,
    /// A node's credential: acts only for the node named like the user.
    Agent,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::User, Role::Admin, Role::Agent];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            let json = serde_json::to_string(&r).expect("serializes");
            assert_eq!(json, format!("\"{r}\""));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
