//! The controller's HTTP API.
//!
//! - [`types`]: the JSON bodies (the wire contract).
//! - [`command`]: the one [`Command`] enum that transports emit, and the
//!   [`Backend`] trait the controller implements.
//! - [`server`]: the axum router; authenticates, parses, maps errors to
//!   401/403/404/409 with JSON bodies.
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`.
//! - [`client`]: the typed client used by the CLI and the node agent.

pub mod client;
pub mod command;
pub mod openapi;
pub mod server;
pub mod types;

pub use client::{Client, ClientError};
pub use command::{Backend, Command, CommandError, Reply};
