//! The wire contract of vgrid's HTTP API: the JSON bodies, headers and
//! limits that the CLI, the node agents and the controller exchange. No
//! transport here: the server is `vgrid-server`, the client
//! `vgrid-client`, so that a node agent links no web server.

pub mod types;
