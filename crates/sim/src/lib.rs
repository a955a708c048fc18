//! The trace simulator: drives `vgrid-core` in virtual time from SWF traces.

pub mod metrics;
pub mod plot;
pub mod rng;
pub mod series;
pub mod synthetic;
