//! `regproc` values: a function's oid, which PostgreSQL prints as the
//! function's name. The catalog columns of this type (`pg_type.typinput`,
//! `pg_aggregate.aggfnoid`, `pg_am.amhandler`, ...) hold oids, so that
//! clients can join them with `pg_proc.oid`, and carry the metadata
//! `pg.oid_alias = regproc`; the wire layer prints them with [`display`].
//!
//! The names are those of the functions quiver describes in `pg_proc`,
//! which are the same for every session and every database: the planner
//! records them once with [`register`] when the engine starts.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The oid-alias kind of a `regproc` column (`pg.oid_alias` metadata).
pub const REGPROC: &str = "regproc";

static NAMES: OnceLock<HashMap<i32, String>> = OnceLock::new();

/// Records the name each function oid prints as. The first call wins:
/// the names come from the catalog's fixed rows, the same in every
/// engine.
pub fn register(names: HashMap<i32, String>) {
    let _ = NAMES.set(names);
}

/// A `regproc` value as PostgreSQL's `regprocout` prints it: `-` for 0,
/// the function's name (qualified where it is not unique), or the number
/// of an oid that names no function.
pub fn display(oid: i32) -> String {
    if oid == 0 {
        return "-".to_string();
    }
    NAMES
        .get()
        .and_then(|names| names.get(&oid))
        .cloned()
        .unwrap_or_else(|| oid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_prints_as_a_dash_and_unknown_oids_as_numbers() {
        assert_eq!(display(0), "-");
        assert_eq!(display(-17), "-17");
    }
}
