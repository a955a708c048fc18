//! The trace simulator: drives `vgrid-core` in virtual time from SWF traces.
//!
//! # Layout
//! - [`config`]: what a run is (domains with their workloads, policy, cost,
//!   best-effort, failure and trading models).
//! - [`driver`]: the discrete-event loop that drives the core.
//! - [`metrics`], [`series`]: per-job records, summaries, time series.
//! - [`report`], [`plot`]: JSON, text, CSV and charts.
//! - [`synthetic`]: a seeded synthetic workload for scale tests.
//! - [`rng`]: the seeded PRNG behind every random choice.

pub mod config;
pub mod driver;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod rng;
pub mod series;
pub mod synthetic;
