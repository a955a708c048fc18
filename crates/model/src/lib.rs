//! The model of vgrid: the types and rules several crates share, each
//! defined once.
//!
//! - [`JobSpec`] and its parts: a validated job request, as stored,
//!   scheduled and run (`vgrid-jobfile` only parses TOML into it).
//! - [`JobState`]: the user-visible states of a job.
//! - [`Role`]: what a token may do.
//! - [`ImageKind`]: how an image boots.
//! - [`limits`]: the bounds of every number a user or a node sends.
//! - [`names`]: the checks of job, user and node names, and the escaping
//!   that prints any stored text on one line.
//! - [`JobSpec::check_host_paths`]: where a job's host directories
//!   (mounts) may be.
//! - [`staging`]: how a job's inputs and outputs travel and are named.
//! - [`sentence`]: an error and its causes as one sentence.
//!
//! **Invariant: no IO, no clock.** Everything here is data and pure rules;
//! any crate may depend on this one, and it depends on none of vgrid's but
//! the expression language (`vgrid-expr`, pure as well).

mod expression;
mod hostpaths;
mod image;
pub mod limits;
pub mod names;
mod role;
mod sentence;
mod spec;
pub mod staging;
mod state;

pub use expression::Expression;
pub use hostpaths::{HostPathError, owner_dirs};
pub use image::ImageKind;
pub use role::Role;
pub use sentence::sentence;
pub use spec::{JobClass, JobSpec, Mount, Transfer, VmMode};
pub use staging::{StagingError, StagingLayout};
pub use state::JobState;
