//! UPSERT and INSERT ... ON CONFLICT: rows whose key exists are updated or
//! skipped, the rest inserted.

use super::*;

/// The rows an `ON CONFLICT (pk) DO UPDATE` writes: proposed rows whose key
/// is new, and existing rows with the assignments applied (`excluded.col`
/// is the proposed value), where the optional WHERE holds.
pub(super) async fn upsert_rows(
    state: &SessionState,
    def: &quiver_catalog::CollectionDef,
    data: (
        &quiver_storage::CollectionData,
        Option<&quiver_storage::Transaction>,
    ),
    pk: usize,
    proposed: RecordBatch,
    assignments: &[ast::Assignment],
    selection: Option<Box<ast::Expr>>,
) -> Result<RecordBatch, QueryError> {
    use arrow::array::{Array, UInt32Array};
    use datafusion::common::DFSchema;
    use datafusion::sql::sqlparser::ast::ExprWithAlias;
    let (data, tx) = data;
    let schema = data.schema();
    let existing = match tx {
        Some(tx) => tx.rows_by_key(data, proposed.column(pk)).await?,
        None => data.rows_by_key(proposed.column(pk)).await?,
    };
    let key_of = |a: &arrow::array::ArrayRef, i: usize| -> String {
        arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
    };
    let mut by_key = std::collections::HashMap::new();
    for i in 0..existing.num_rows() {
        by_key.insert(key_of(existing.column(pk), i), i as u32);
    }
    let (mut fresh, mut hit_new, mut hit_old) = (Vec::new(), Vec::new(), Vec::new());
    // A key proposed twice would be affected twice (PostgreSQL: 21000).
    let mut proposed_keys = std::collections::HashSet::with_capacity(proposed.num_rows());
    for i in 0..proposed.num_rows() {
        let key = key_of(proposed.column(pk), i);
        if !proposed_keys.insert(key.clone()) {
            return Err(QueryError::ConflictTwice(key));
        }
    }
    for i in 0..proposed.num_rows() {
        match by_key.get(&key_of(proposed.column(pk), i)) {
            Some(&j) => {
                hit_new.push(i as u32);
                hit_old.push(j);
            }
            None => fresh.push(i as u32),
        }
    }
    let take = |b: &RecordBatch, idx: &[u32]| -> Result<RecordBatch, QueryError> {
        let idx = UInt32Array::from(idx.to_vec());
        let cols = (0..schema.fields().len())
            .map(|c| arrow::compute::take(b.column(c).as_ref(), &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    };
    let fresh = take(&proposed, &fresh)?;
    if hit_new.is_empty() {
        return Ok(fresh);
    }
    let old = take(&existing, &hit_old)?;
    let new = take(&proposed, &hit_new)?;
    // Both rows side by side: the collection's columns, then `excluded`'s.
    let df_schema = DFSchema::try_from_qualified_schema(def.name.as_str(), &schema)?
        .join(&DFSchema::try_from_qualified_schema("excluded", &schema)?)?;
    let mut cols = old.columns().to_vec();
    cols.extend(new.columns().iter().cloned());
    let both = RecordBatch::try_new(Arc::new(df_schema.as_arrow().clone()), cols)?;
    let eval = |expr: ast::Expr| -> Result<arrow::array::ArrayRef, QueryError> {
        let logical = state
            .create_logical_expr_from_sql_expr(ExprWithAlias { expr, alias: None }, &df_schema)?;
        let physical = state.create_physical_expr(logical, &df_schema)?;
        Ok(physical.evaluate(&both)?.into_array(both.num_rows())?)
    };
    let mut out = old.columns().to_vec();
    for a in assignments {
        let ast::AssignmentTarget::ColumnName(name) = &a.target else {
            return Err(QueryError::Unsupported(
                "ON CONFLICT DO UPDATE assigns one column at a time".into(),
            ));
        };
        let column = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.clone())
            .unwrap_or_default();
        let Some(c) = def.field_index(&column) else {
            return Err(QueryError::UnknownColumn {
                column,
                collection: def.name.clone(),
            });
        };
        // `SET v = '[1,2]'`, `SET b = B'01'`: read as the column's type.
        let mut expr = a.value.clone();
        rewrite_bit_literals(&mut expr);
        wrap_value(&def.fields[c].field_type, &mut expr)?;
        let value = eval(expr)?;
        let value = conform(&value, schema.field(c))?;
        if c == pk {
            let moved = (0..value.len()).any(|i| key_of(&value, i) != key_of(old.column(pk), i));
            if moved {
                return Err(QueryError::Unsupported(
                    "ON CONFLICT DO UPDATE that changes the primary key is not supported yet"
                        .into(),
                ));
            }
        }
        out[c] = value;
    }
    let mut updated = RecordBatch::try_new(schema.clone(), out)?;
    if let Some(mut cond) = selection {
        rewrite_bit_literals(cond.as_mut());
        let keep = eval(*cond)?;
        let keep = keep
            .as_boolean_opt()
            .ok_or_else(|| QueryError::Unsupported("ON CONFLICT WHERE must be boolean".into()))?;
        let keep = arrow::array::BooleanArray::from_iter(
            (0..keep.len()).map(|i| Some(keep.is_valid(i) && keep.value(i))),
        );
        updated = arrow::compute::filter_record_batch(&updated, &keep)?;
    }
    Ok(arrow::compute::concat_batches(&schema, [&fresh, &updated])?)
}

/// The conflict target must name the primary key (quiver's only unique
/// key), as PostgreSQL requires a unique index matching it: 42P10
/// otherwise; `ON CONSTRAINT <collection>_pkey` names it too.
/// `value` as a column of `field`'s type. Parameters of a statement
/// planned only when it runs keep the client's type: a vector sent as
/// text (`'[1,2]'`) is read as pgvector reads it, with its dimension
/// checked; the rest is Arrow's cast.
fn conform(
    value: &arrow::array::ArrayRef,
    field: &Field,
) -> Result<arrow::array::ArrayRef, QueryError> {
    if value.data_type() == field.data_type() {
        return Ok(value.clone());
    }
    if let DataType::FixedSizeList(_, dim) = field.data_type()
        && matches!(
            value.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::List(_)
        )
    {
        let vectors = quiver_vector::column::VectorColumn::try_from_array(value)
            .and_then(|v| v.to_fixed(*dim as usize))
            .map_err(|e| QueryError::Storage(quiver_storage::StorageError::Vector(e)))?;
        return Ok(Arc::new(vectors));
    }
    Ok(arrow::compute::cast(value, field.data_type())?)
}

fn check_target(
    def: &quiver_catalog::CollectionDef,
    pk: usize,
    target: Option<&ast::ConflictTarget>,
) -> Result<(), QueryError> {
    let key = &def.fields[pk].name;
    match target {
        None => Ok(()),
        Some(ast::ConflictTarget::Columns(cols)) => {
            for c in cols {
                let name = ddl::ident_name(c);
                if def.field_index(&name).is_none() {
                    return Err(QueryError::UnknownColumn {
                        column: name,
                        collection: def.name.clone(),
                    });
                }
            }
            if cols.len() == 1 && ddl::ident_name(&cols[0]) == *key {
                Ok(())
            } else {
                Err(QueryError::ConflictTargetMismatch {
                    collection: def.name.clone(),
                    key: key.clone(),
                })
            }
        }
        Some(ast::ConflictTarget::OnConstraint(name)) => {
            let constraint = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(ddl::ident_name)
                .unwrap_or_default();
            if constraint == format!("{}_pkey", def.name) {
                Ok(())
            } else {
                Err(QueryError::UnknownConstraint {
                    constraint,
                    collection: def.name.clone(),
                })
            }
        }
    }
}

impl Engine {
    /// `UPSERT INTO` and `INSERT ... ON CONFLICT`.
    pub(super) async fn upsert(
        &self,
        session: &Session,
        insert: Box<ast::Statement>,
        action: ConflictAction,
        target: Option<ast::ConflictTarget>,
        params: Option<ParamValues>,
    ) -> Result<Output, QueryError> {
        let target_fields = crate::insert_values::insert_targets(self, session, &insert);
        Box::pin(self.upsert_checked(session, insert, action, target, params))
            .await
            .map_err(|e| crate::insert_values::insert_error(target_fields.as_ref(), e))
    }

    async fn upsert_checked(
        &self,
        session: &Session,
        mut insert: Box<ast::Statement>,
        action: ConflictAction,
        target: Option<ast::ConflictTarget>,
        params: Option<ParamValues>,
    ) -> Result<Output, QueryError> {
        let returning = self.plan_returning(session, &mut insert)?;
        rewrite_insert_vectors(&mut insert, &self.catalog, &session.database())?;
        let state = session.state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(insert))
            .await?;
        let plan = match params {
            Some(p) => plan.with_param_values(p)?,
            None => plan,
        };
        let LogicalPlan::Dml(DmlStatement {
            table_name, input, ..
        }) = plan
        else {
            return Err(QueryError::Unsupported("expected an INSERT".into()));
        };
        let db = table_name
            .catalog()
            .map(str::to_string)
            .unwrap_or_else(|| session.database());
        let def = self.catalog.get_collection(&db, table_name.table())?;
        let mut needs = access::plan_needs(&input);
        needs.insert(Need::on(Privilege::Insert, &def));
        if !matches!(action, ConflictAction::Nothing) {
            needs.insert(Need::on(Privilege::Update, &def));
        }
        // As in PostgreSQL, a conflict target and a DO UPDATE (its SET and
        // WHERE read the existing row) need SELECT: otherwise the row count
        // answers questions about data the user may not read.
        if target.is_some() || matches!(action, ConflictAction::Update { .. }) {
            needs.insert(Need::on(Privilege::Select, &def));
        }
        access::authorize(&self.catalog, session, &needs)?;
        let Some(pk) = def.primary_key else {
            return Err(QueryError::NoConflictTarget(def.name.clone()));
        };
        check_target(&def, pk, target.as_ref())?;
        let data = self.storage.open_collection(&def)?;
        // Reads and writes of the rows to update are one step: concurrent
        // upserts, UPDATEs and DELETEs of the collection wait.
        // Inside a transaction the lock is held until it ends.
        let tx = session.transaction();
        let _serial = match &tx {
            Some(tx) => {
                tx.lock(&data).await?;
                None
            }
            None => Some(data.read_modify_write(Some(session.interrupt())).await?),
        };
        let input = crate::session::optimize(state, &input)?;
        let physical = state
            .query_planner()
            .create_physical_plan(&input, state)
            .await?;
        let batches = collect(physical, session.task_ctx()).await?;
        let schema = data.schema();
        let batches = batches
            .into_iter()
            .map(|b| {
                // Bound parameters keep the client's type (psycopg sends a
                // small int as int2): cast to the collection's.
                let columns = b
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, f)| conform(c, f))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RecordBatch::try_new(schema.clone(), columns)?)
            })
            .collect::<Result<Vec<_>, QueryError>>()?;
        let batch = arrow::compute::concat_batches(&schema, &batches)?;
        let mutation = match action {
            ConflictAction::Replace => Mutation::Insert {
                rows: batch,
                on_conflict: Conflict::Replace,
            },
            ConflictAction::Nothing => Mutation::Insert {
                rows: batch,
                on_conflict: Conflict::Skip,
            },
            ConflictAction::Update {
                assignments,
                selection,
            } => Mutation::Insert {
                rows: upsert_rows(
                    state,
                    &def,
                    (&data, tx.as_deref()),
                    pk,
                    batch,
                    &assignments,
                    selection,
                )
                .await?,
                on_conflict: Conflict::Replace,
            },
        };
        let Some(returning) = returning else {
            let (n, _) =
                quiver_exec::txn::mutate(&data, tx.as_deref(), mutation, false, None).await?;
            return Ok(Output::Command {
                tag: "INSERT".into(),
                rows: Some(n),
            });
        };
        // RETURNING: the rows inserted or updated (not those skipped).
        let (n, written) =
            quiver_exec::txn::mutate(&data, tx.as_deref(), mutation, true, None).await?;
        let returned = quiver_exec::dml::Returned::default();
        if let Some(written) = written {
            returned.push(written);
        }
        Ok(Output::Returning {
            schema: returning.schema.clone(),
            batches: returning.evaluate(state, &returned)?,
            tag: returning.tag,
            rows: n,
        })
    }
}
