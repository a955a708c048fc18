//! The controller's HTTP server: authenticates each request, parses it into
//! the one [`Command`] enum every transport emits, hands it to a
//! [`Backend`] (the controller), and turns the answer into JSON with the
//! right status. No HTTP type goes further in.
//!
//! - [`command`]: [`Command`], [`Reply`], [`CommandError`], [`Backend`].
//! - [`server`]: the route table and handlers; errors map to
//!   400/401/403/404/409/413/503, always as JSON.
//! - [`routes`]: what every route shares: the token checked before the
//!   body is read, body limits, JSON for unknown routes and wrong methods.
//! - [`admin`]: the administrators' routes (drain, resume and forget
//!   nodes; list and remove users; rotate and revoke tokens).
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`.
//! - [`store`]: the content-addressed store's routes (chunks, manifests,
//!   image names).
//! - [`tls`]: the listener that serves over TLS.
//! - [`ui`]: the web dashboard, its login and session cookie.
//! - `request_log`: one log line per request.

pub mod admin;
pub mod command;
pub mod openapi;
mod request_log;
pub mod routes;
pub mod server;
pub mod store;
pub mod tls;
pub mod ui;

pub use command::{Backend, Command, CommandError, JobOutputs, Reply};
pub use server::{router, serve, serve_tls};
