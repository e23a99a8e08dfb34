//! The SQLSTATE table: every code quiver reports, named as PostgreSQL's
//! Appendix A names it, and [`SqlStateError`], the trait through which each
//! layer's error enum says the code of each of its variants.
//!
//! This file is the only place where a SQLSTATE is written as a literal.
//! The server turns an error into an `ErrorResponse` in one place
//! (`server/error.rs`), asking the error for its code.

use std::fmt;

/// A five-character SQLSTATE code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(&'static str);

impl SqlState {
    /// The code, e.g. `"42P01"`.
    pub const fn code(self) -> &'static str {
        self.0
    }

    /// The class: the code's first two characters (`"42"`).
    pub fn class(self) -> &'static str {
        &self.0[..2]
    }

    /// Whether the server, not the client, is to report this error:
    /// insufficient resources (53), system errors (58) and internal errors (XX).
    pub fn is_server_fault(self) -> bool {
        matches!(self.class(), "53" | "58" | "XX")
    }
}

impl fmt::Display for SqlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// An error that knows its SQLSTATE. Each layer's error enum implements it,
/// one arm per variant; wrapped errors answer with the code of what they wrap.
pub trait SqlStateError: std::error::Error {
    fn sqlstate(&self) -> SqlState;
}

macro_rules! table {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)*) => {
        $($(#[$doc])* pub const $name: SqlState = SqlState($code);)*
        /// Every code of the table, with its name.
        pub const ALL: &[(&str, SqlState)] = &[$((stringify!($name), $name)),*];
    };
}

table! {
    // Class 01: warning.
    WARNING = "01000";
    // Class 08: connection exception.
    CONNECTION_DOES_NOT_EXIST = "08003";
    PROTOCOL_VIOLATION = "08P01";
    // Class 0A: feature not supported.
    FEATURE_NOT_SUPPORTED = "0A000";
    // Class 0L: invalid grantor; 0LP01 is invalid_grant_operation.
    INVALID_GRANT_OPERATION = "0LP01";
    // Class 25: invalid transaction state.
    ACTIVE_SQL_TRANSACTION = "25001";
    READ_ONLY_SQL_TRANSACTION = "25006";
    NO_ACTIVE_SQL_TRANSACTION = "25P01";
    IN_FAILED_SQL_TRANSACTION = "25P02";
    IDLE_IN_TRANSACTION_SESSION_TIMEOUT = "25P03";
    // Class 34: invalid cursor name.
    INVALID_CURSOR_NAME = "34000";
    // Class 3B: savepoint exception.
    INVALID_SAVEPOINT_SPECIFICATION = "3B001";
    // Class 40: transaction rollback.
    SERIALIZATION_FAILURE = "40001";
    DEADLOCK_DETECTED = "40P01";
    // Class 21: cardinality violation.
    CARDINALITY_VIOLATION = "21000";
    // Class 22: data exception.
    DATA_EXCEPTION = "22000";
    NUMERIC_VALUE_OUT_OF_RANGE = "22003";
    NULL_VALUE_NOT_ALLOWED = "22004";
    DIVISION_BY_ZERO = "22012";
    INVALID_PARAMETER_VALUE = "22023";
    INVALID_REGULAR_EXPRESSION = "2201B";
    INVALID_ROW_COUNT_IN_LIMIT_CLAUSE = "2201W";
    INVALID_ROW_COUNT_IN_RESULT_OFFSET_CLAUSE = "2201X";
    STRING_DATA_LENGTH_MISMATCH = "22026";
    INVALID_TEXT_REPRESENTATION = "22P02";
    BAD_COPY_FILE_FORMAT = "22P04";
    INVALID_BINARY_REPRESENTATION = "22P03";
    CHARACTER_NOT_IN_REPERTOIRE = "22021";
    // Class 23: integrity constraint violation.
    NOT_NULL_VIOLATION = "23502";
    UNIQUE_VIOLATION = "23505";
    // Class 2B: dependent privilege descriptors still exist.
    DEPENDENT_OBJECTS_STILL_EXIST = "2BP01";
    // Class 28: invalid authorization specification.
    INVALID_AUTHORIZATION_SPECIFICATION = "28000";
    INVALID_PASSWORD = "28P01";
    // Class 3D: invalid catalog name (an unknown database).
    INVALID_CATALOG_NAME = "3D000";
    // Class 42: syntax error or access rule violation.
    SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION = "42000";
    INSUFFICIENT_PRIVILEGE = "42501";
    SYNTAX_ERROR = "42601";
    DUPLICATE_COLUMN = "42701";
    AMBIGUOUS_COLUMN = "42702";
    UNDEFINED_COLUMN = "42703";
    UNDEFINED_OBJECT = "42704";
    DUPLICATE_OBJECT = "42710";
    DATATYPE_MISMATCH = "42804";
    WRONG_OBJECT_TYPE = "42809";
    UNDEFINED_FUNCTION = "42883";
    UNDEFINED_TABLE = "42P01";
    UNDEFINED_PARAMETER = "42P02";
    DUPLICATE_CURSOR = "42P03";
    DUPLICATE_DATABASE = "42P04";
    DUPLICATE_TABLE = "42P07";
    NAME_TOO_LONG = "42622";
    INVALID_NAME = "42602";
    INVALID_COLUMN_REFERENCE = "42P10";
    INVALID_TABLE_DEFINITION = "42P16";
    // Class 53: insufficient resources.
    DISK_FULL = "53100";
    OUT_OF_MEMORY = "53200";
    TOO_MANY_CONNECTIONS = "53300";
    // Class 54: program limit exceeded.
    PROGRAM_LIMIT_EXCEEDED = "54000";
    STATEMENT_TOO_COMPLEX = "54001";
    // Class 55: object not in prerequisite state.
    OBJECT_NOT_IN_PREREQUISITE_STATE = "55000";
    OBJECT_IN_USE = "55006";
    LOCK_NOT_AVAILABLE = "55P03";
    CANT_CHANGE_RUNTIME_PARAM = "55P02";
    // Class 57: operator intervention.
    QUERY_CANCELED = "57014";
    ADMIN_SHUTDOWN = "57P01";
    // Class 58: system error (errors external to quiver).
    IO_ERROR = "58030";
    // Class XX: internal error.
    INTERNAL_ERROR = "XX000";
    DATA_CORRUPTED = "XX001";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_well_formed_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for (name, state) in ALL {
            let code = state.code();
            assert_eq!(code.len(), 5, "{name}");
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
                "{name}: {code}"
            );
            assert!(seen.insert(code), "{name}: {code} twice");
        }
        assert_eq!(UNDEFINED_TABLE.class(), "42");
        assert!(INTERNAL_ERROR.is_server_fault() && DISK_FULL.is_server_fault());
        assert!(!SYNTAX_ERROR.is_server_fault());
    }
}
