//! What every layer of quiver shares: the PostgreSQL version it reports,
//! and (in [`sqlstate`]) the one table of SQLSTATE codes with the trait
//! through which each layer's error enum says its own.

pub mod float_text;
pub mod interrupt;
pub mod json;
pub mod pg_array;
pub mod regproc;
pub mod sqlstate;
pub mod timestamp_text;
pub mod uuid;

/// The PostgreSQL version quiver reports to clients (they pick their
/// catalog queries by it).
pub const SERVER_VERSION: &str = "15.0";

/// [`SERVER_VERSION`] as `server_version_num` gives it.
pub const SERVER_VERSION_NUM: &str = "150000";
