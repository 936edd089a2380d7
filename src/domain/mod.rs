//! Pure domain code: the flag model, evaluation, statistics and fuse policy.
//! Nothing here does I/O or is async, so all of it is unit- and property-tested.

pub mod admin;
pub mod delta;
pub mod eval;
pub mod events;
pub mod fuse;
pub mod model;
pub mod names;
pub mod stats;
pub mod tokens;
pub mod users;
pub mod validate;
