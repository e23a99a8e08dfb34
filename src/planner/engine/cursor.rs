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
        self.check_declare(session, &name, hold)?;
        let output = Box::pin(self.execute(session, Statement::Query(query))).await?;
        self.keep_cursor(session, name, hold, binary, output)
    }

    /// A prepared DECLARE: its query's plan (`plan`) with the parameters
    /// bound runs into a new cursor.
    pub(crate) async fn declare_prepared(
        &self,
        session: &Session,
        statement: &Statement,
        plan: &LogicalPlan,
        params: ParamValues,
        names: Option<&[crate::colnames::ColumnName]>,
    ) -> Result<Output, QueryError> {
        let Statement::DeclareCursor {
            name, hold, binary, ..
        } = statement
        else {
            return Err(QueryError::Unsupported("not a DECLARE".into()));
        };
        self.check_declare(session, name, *hold)?;
        let plan = super::fold_limit_casts(plan.clone().with_param_values(params)?)?;
        let output = super::show::named(self.run_plan(session, plan).await?, names);
        self.keep_cursor(session, name.clone(), *hold, *binary, output)
    }

    fn keep_cursor(
        &self,
        session: &Session,
        name: String,
        hold: bool,
        binary: bool,
        output: Output,
    ) -> Result<Output, QueryError> {
        match output {
            Output::Rows { schema, stream } => {
                let in_block = session.block().in_block();
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

    /// DECLARE outside a block needs WITH HOLD; a name is used once.
    fn check_declare(&self, session: &Session, name: &str, hold: bool) -> Result<(), QueryError> {
        if !hold && !session.block().in_block() {
            return Err(QueryError::Transaction {
                message: "DECLARE CURSOR can only be used in transaction blocks".into(),
                code: sqlstate::NO_ACTIVE_SQL_TRANSACTION,
            });
        }
        if session.cursors.contains(name) {
            return Err(QueryError::Transaction {
                message: format!("cursor \"{name}\" already exists"),
                code: sqlstate::DUPLICATE_CURSOR,
            });
        }
        Ok(())
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
        if move_only {
            let moved = cursor.skip(count).await;
            session.cursors.insert(name.to_string(), cursor);
            return Ok(Output::Command {
                tag: "MOVE".into(),
                rows: Some(moved? as usize),
            });
        }
        let (schema, binary) = (cursor.schema.clone(), cursor.binary);
        let stream =
            crate::cursor::fetch_stream(cursor, name.to_string(), session.cursors.clone(), count);
        Ok(Output::Fetched {
            schema,
            stream,
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
            None => {
                session.cursors.clear();
                Ok(command("CLOSE CURSOR ALL"))
            }
            Some(name) => {
                session.cursors.take(name).ok_or_else(|| no_cursor(name))?;
                Ok(command("CLOSE CURSOR"))
            }
        }
    }
}
