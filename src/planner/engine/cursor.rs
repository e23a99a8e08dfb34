//! DECLARE, FETCH, MOVE and CLOSE (the cursors are `crate::cursor`'s).

use quiver_common::sqlstate;

use super::*;
use crate::cursor::Cursor;

fn no_cursor(name: &str) -> QueryError {
    QueryError::Transaction {
        message: format!("cursor \"{name}\" does not exist"),
        code: sqlstate::INVALID_CURSOR_NAME,
    }
}

impl Engine {
    /// `DECLARE name CURSOR [WITH HOLD] FOR query`: the query starts; its
    /// rows wait for FETCH.
    pub(crate) async fn declare_cursor(
        &self,
        session: &Session,
        name: String,
        query: Box<ast::Statement>,
        hold: bool,
        binary: bool,
    ) -> Result<Output, QueryError> {
        let in_block = session.block().in_block();
        if !hold && !in_block {
            return Err(QueryError::Transaction {
                message: "DECLARE CURSOR can only be used in transaction blocks".into(),
                code: sqlstate::NO_ACTIVE_SQL_TRANSACTION,
            });
        }
        if session.cursors.contains(&name) {
            return Err(QueryError::Transaction {
                message: format!("cursor \"{name}\" already exists"),
                code: sqlstate::DUPLICATE_CURSOR,
            });
        }
        match Box::pin(self.execute(session, Statement::Query(query))).await? {
            Output::Rows { schema, stream } => {
                session
                    .cursors
                    .insert(name, Cursor::new(schema, stream, hold, binary, in_block));
                Ok(command("DECLARE CURSOR"))
            }
            _ => Err(QueryError::Unsupported(
                "DECLARE CURSOR needs a query that returns rows".into(),
            )),
        }
    }

    /// `FETCH [n | ALL] FROM name`, or with `move_only`, `MOVE`.
    pub(crate) async fn fetch(
        &self,
        session: &Session,
        name: &str,
        count: Option<u64>,
        move_only: bool,
    ) -> Result<Output, QueryError> {
        let mut cursor = session.cursors.take(name).ok_or_else(|| no_cursor(name))?;
        let fetched = cursor.fetch(count).await;
        let (schema, binary) = (cursor.schema.clone(), cursor.binary);
        session.cursors.insert(name.to_string(), cursor);
        let batches = fetched?;
        if move_only {
            let rows = batches.iter().map(|b| b.num_rows()).sum();
            return Ok(Output::Command {
                tag: "MOVE".into(),
                rows: Some(rows),
            });
        }
        Ok(Output::Fetched {
            schema,
            batches,
            binary,
        })
    }

    /// `CLOSE name`, `CLOSE ALL`.
    pub(crate) fn close_cursor(
        &self,
        session: &Session,
        name: Option<&str>,
    ) -> Result<Output, QueryError> {
        match name {
            None => session.cursors.clear(),
            Some(name) => {
                session.cursors.take(name).ok_or_else(|| no_cursor(name))?;
            }
        }
        Ok(command("CLOSE CURSOR"))
    }
}
