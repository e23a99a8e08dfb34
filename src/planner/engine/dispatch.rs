//! Statement dispatch: each parsed statement to its handler (DDL against the
//! catalog, queries and DML through DataFusion, SHOW and maintenance verbs).

use super::*;

impl Engine {
    /// Run one statement.
    #[tracing::instrument(skip_all)]
    pub async fn execute(
        &self,
        session: &Session,
        statement: Statement,
    ) -> Result<Output, QueryError> {
        debug!(?statement, "execute");
        self.admit(session, &statement)?;
        self.lock_for_update(session, &statement).await?;
        match statement {
            Statement::Query(mut stmt) => {
                // Named as PostgreSQL names the calls' columns.
                let setting_names =
                    crate::settings_fn::uses(&stmt).then(|| crate::colnames::of_statement(&stmt));
                crate::settings_fn::rewrite(session, &mut stmt, true, None)?;
                if let Some(returning) = self.plan_returning(session, &mut stmt)? {
                    let plan = self.plan_dml(session, *stmt).await?;
                    return self.run_returning(session, plan, &returning).await;
                }
                if let Some(out) = self.insert_literals(session, &stmt).await? {
                    return Ok(out);
                }
                let names = setting_names.unwrap_or_else(|| crate::colnames::of_statement(&stmt));
                let target = crate::insert_values::insert_targets(self, session, &stmt);
                let insert_error = |e| crate::insert_values::insert_error(target.as_ref(), e);
                crate::colnames::alias_duplicates(&mut stmt);
                rewrite_insert_vectors(&mut stmt, &self.catalog, &session.database())?;
                let _planning = session.reserve_plan()?;
                let plan = super::plan_statement(session, stmt)
                    .await
                    .map_err(|e| insert_error(e.into()))?;
                let output = self.run_plan(session, plan).await.map_err(insert_error)?;
                Ok(named(output, names.as_deref()))
            }
            Statement::CreateCollection(ct) => {
                let mut def = ddl::collection_def(&ct, &session.database())?;
                access::authorize_database(
                    &self.catalog,
                    session,
                    Privilege::Create,
                    &def.database,
                )?;
                def.owner = Some(session.user().to_string());
                let name = def.name.clone();
                let created = self.catalog.create_collection(def, ct.if_not_exists)?;
                if created.is_none() {
                    session.notice(
                        "42P07",
                        format!("relation \"{name}\" already exists, skipping"),
                    );
                }
                if let Some(def) = created {
                    self.storage.open_collection(&def)?;
                    if session.block().in_block() {
                        session.created(crate::ddl_undo::Undo::Collection {
                            db: def.database.clone(),
                            name: def.name.clone(),
                            id: def.id,
                        });
                    }
                }
                Ok(command("CREATE TABLE"))
            }
            Statement::DropCollection { names, if_exists } => {
                // Every name is checked before anything is dropped.
                let mut needs = std::collections::BTreeSet::new();
                for name in &names {
                    let (db, coll) = ddl::resolve_name(name, &session.database())?;
                    // Aliases refuse before anything is dropped (and
                    // before a block's COMMIT could fail on them).
                    self.catalog.check_droppable(&db, &coll)?;
                    if let Some(def) = self.catalog.collection(&db, &coll) {
                        needs.insert(Need::on(Privilege::Drop, &def));
                    }
                }
                access::authorize(&self.catalog, session, &needs)?;
                if session.block().in_block() {
                    // Inside a block the drop waits for COMMIT (and
                    // vanishes with ROLLBACK); a missing name fails now.
                    for name in &names {
                        let (db, coll) = ddl::resolve_name(name, &session.database())?;
                        match self.catalog.collection(&db, &coll) {
                            Some(def) => session.drop_at_commit(db, def.name.clone(), def.id),
                            None if if_exists => session.notice(
                                "00000",
                                format!("table \"{coll}\" does not exist, skipping"),
                            ),
                            None => {
                                return Err(quiver_catalog::CatalogError::CollectionNotFound {
                                    name: coll,
                                }
                                .into());
                            }
                        }
                    }
                    return Ok(command("DROP TABLE"));
                }
                for name in &names {
                    let (db, coll) = ddl::resolve_name(name, &session.database())?;
                    match self.catalog.drop_collection(&db, &coll, if_exists)? {
                        Some(def) => self.storage.drop_collection(def.id),
                        None => session.notice(
                            "00000",
                            format!("table \"{coll}\" does not exist, skipping"),
                        ),
                    }
                }
                Ok(command("DROP TABLE"))
            }
            Statement::DescribeCollection { name } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                self.require_visible(session, &def)?;
                rows(ddl::describe(&def))
            }
            Statement::ShowCollections => {
                let db = session.database();
                let names: Vec<String> = self
                    .catalog
                    .collection_names(&db)
                    .into_iter()
                    .filter(|n| {
                        self.catalog
                            .collection(&db, n)
                            .is_some_and(|d| access::sees(&self.catalog, session.user(), &d))
                    })
                    .collect();
                let counts: Vec<i64> = names
                    .iter()
                    .map(|n| {
                        self.catalog
                            .collection(&db, n)
                            .and_then(|d| self.storage.open_collection(&d).ok())
                            .map(|d| d.snapshot().live_rows() as i64)
                            .unwrap_or(0)
                    })
                    .collect();
                rows(RecordBatch::try_new(
                    collections_schema(),
                    vec![
                        Arc::new(StringArray::from(names)),
                        Arc::new(Int64Array::from(counts)),
                    ],
                )?)
            }
            Statement::CreateDatabase {
                name,
                if_not_exists,
            } => {
                access::authorize_global(&self.catalog, session, Privilege::Create)?;
                let existed = if_not_exists && self.catalog.database_exists(&name);
                self.catalog
                    .create_database_owned(&name, if_not_exists, Some(session.user()))?;
                if existed {
                    session.notice(
                        "42P04",
                        format!("database \"{name}\" already exists, skipping"),
                    );
                }
                Ok(command("CREATE DATABASE"))
            }
            Statement::DropDatabase { name, if_exists } => {
                if name == session.database() {
                    return Err(quiver_catalog::CatalogError::DropCurrentDatabase { name }.into());
                }
                let exists = self.catalog.database_exists(&name);
                if exists {
                    access::authorize_database(&self.catalog, session, Privilege::Drop, &name)?;
                }
                self.catalog.drop_database(&name, if_exists)?;
                if !exists {
                    session.notice(
                        "00000",
                        format!("database \"{name}\" does not exist, skipping"),
                    );
                }
                Ok(command("DROP DATABASE"))
            }
            Statement::CreateExtension { name } => {
                if name.eq_ignore_ascii_case("vector") {
                    Ok(command("CREATE EXTENSION"))
                } else {
                    Err(QueryError::Unsupported(format!(
                        "extension \"{name}\" is not available (vectors are built in)"
                    )))
                }
            }
            Statement::Set { name, value, local } => self.set(session, &name, &value, local),
            Statement::Reset { name, tag } => {
                if tag == "DISCARD ALL" {
                    session.cursors.clear();
                    session.discard_advisory_locks();
                }
                session.reset_var(name.as_deref())?;
                Ok(command(tag))
            }
            Statement::Show { name } => {
                let value = session
                    .var(&name)
                    .ok_or_else(|| crate::session::unknown_setting(&name.to_ascii_lowercase()))?;
                rows(RecordBatch::try_new(
                    show_schema(&name),
                    vec![Arc::new(StringArray::from(vec![value]))],
                )?)
            }
            Statement::Transaction(kind) => self.transaction(session, kind).await,
            Statement::DeclareCursor {
                name,
                query,
                hold,
                binary,
            } => {
                self.declare_cursor(session, name, query, hold, binary)
                    .await
            }
            Statement::Fetch {
                name,
                count,
                move_only,
            } => self.fetch(session, &name, count, move_only).await,
            Statement::CloseCursor { name } => self.close_cursor(session, name.as_deref()),
            Statement::CopyTo { query, options } => {
                match Box::pin(self.execute(session, Statement::Query(query))).await? {
                    Output::Rows { schema, stream } => Ok(Output::CopyOut {
                        schema,
                        stream,
                        options,
                    }),
                    _ => Err(QueryError::Unsupported(
                        "COPY (query) TO STDOUT needs a query that returns rows".into(),
                    )),
                }
            }
            Statement::CopyFrom(copy) => {
                let (db, coll) = ddl::resolve_name(&copy.table, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                access::authorize(
                    &self.catalog,
                    session,
                    &[Need::on(Privilege::Insert, &def)].into(),
                )?;
                let targets = if copy.columns.is_empty() {
                    (0..def.fields.len()).collect()
                } else {
                    copy.columns
                        .iter()
                        .map(|c| {
                            let name = ddl::ident_name(c);
                            def.field_index(&name).ok_or(QueryError::UnknownColumn {
                                column: name,
                                collection: def.name.clone(),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?
                };
                let data = self.storage.open_collection(&def)?;
                // Columns the COPY leaves out take their defaults.
                let defaults = def
                    .fields
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !targets.contains(i))
                    .filter_map(|(i, f)| {
                        let text = f.default.as_ref()?;
                        Some(ddl::default_value(text, &f.field_type).map(|v| (i, v)))
                    })
                    .collect::<datafusion::common::Result<Vec<_>>>()?;
                let copy = CopyIn::new(def, data, targets, copy.options).with_defaults(defaults);
                // A block's rows stay in its transaction until COMMIT.
                let copy = if session.transaction().is_none() {
                    copy.allow_bulk()
                } else {
                    copy
                };
                Ok(Output::CopyIn(Box::new(copy)))
            }
            Statement::NoOp { tag } => Ok(command(tag)),
            Statement::Maintain { verb, name } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                access::authorize(
                    &self.catalog,
                    session,
                    &[Need::on(Privilege::Maintain, &def)].into(),
                )?;
                let data = self.storage.open_collection(&def)?;
                match verb {
                    MaintainVerb::Flush => data.flush().await?,
                    MaintainVerb::Compact => {
                        data.compact().await?;
                    }
                    MaintainVerb::Load => data.load().await?,
                    MaintainVerb::Release => data.release(),
                }
                Ok(command(verb.tag()))
            }
            Statement::ShowSegments { name } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                let def = self.catalog.get_collection(&db, &coll)?;
                self.require_visible(session, &def)?;
                let data = self.storage.open_collection(&def)?;
                rows(segments_batch(&data.segment_rows())?)
            }
            Statement::Upsert {
                insert,
                action,
                target,
            } => self.upsert(session, insert, action, target, None).await,
            Statement::Tuned {
                ef,
                nprobe,
                refine_k,
                inner,
            } => {
                let _tuned = session.tune(
                    crate::engine::knob_value(ef, None)?,
                    crate::engine::knob_value(nprobe, None)?,
                    crate::engine::knob_value(refine_k, None)?,
                );
                Box::pin(self.execute(session, *inner)).await
            }
            Statement::Alias(stmt) => {
                match crate::alter_ddl::execute(&self.catalog, session, stmt)? {
                    crate::alter_ddl::AliasOutput::Tag(tag) => Ok(command(tag)),
                    crate::alter_ddl::AliasOutput::Rows(batch) => rows(batch),
                }
            }
            Statement::RenameCollection {
                name,
                new_name,
                if_exists,
            } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                crate::alter_ddl::rename(
                    &self.catalog,
                    &self.storage,
                    session,
                    &db,
                    &coll,
                    &new_name,
                    if_exists,
                )?;
                Ok(command("ALTER TABLE"))
            }
            Statement::AlterColumnDefault {
                name,
                column,
                default,
                if_exists,
            } => {
                let (db, coll) = ddl::resolve_name(&name, &session.database())?;
                crate::alter_ddl::set_default(
                    &self.catalog,
                    session,
                    &db,
                    &coll,
                    &column,
                    default.as_deref(),
                    if_exists,
                )?;
                Ok(command("ALTER TABLE"))
            }
            Statement::Index(stmt) => {
                // Inside a block, the indexes a CREATE INDEX adds are noted
                // to drop if the block does not commit.
                let before = |s: &Session| -> std::collections::BTreeSet<String> {
                    let db = s.database();
                    self.catalog
                        .all_collections()
                        .iter()
                        .filter(|c| c.database == db)
                        .flat_map(|c| c.indexes.iter().map(|i| i.name.clone()))
                        .collect()
                };
                let creating = matches!(stmt, quiver_sql::statement::IndexStatement::Create { .. })
                    && session.block().in_block();
                let had = if creating {
                    before(session)
                } else {
                    Default::default()
                };
                let out =
                    crate::index_ddl::execute(&self.catalog, &self.storage, session, stmt).await?;
                if creating {
                    for name in before(session).difference(&had) {
                        session.created(crate::ddl_undo::Undo::Index {
                            db: session.database(),
                            name: name.clone(),
                        });
                    }
                }
                match out {
                    crate::index_ddl::IndexOutput::Tag(tag) => Ok(command(tag)),
                    crate::index_ddl::IndexOutput::Rows(batch) => rows(batch),
                }
            }
            Statement::Access(stmt) => match access::execute(&self.catalog, session, stmt)? {
                access::AccessOutput::Tag(tag) => Ok(command(tag)),
                access::AccessOutput::Rows(batch) => rows(batch),
            },
        }
    }

    /// DESCRIBE and SHOW SEGMENTS need some privilege on the collection.
    pub(super) fn require_visible(
        &self,
        session: &Session,
        def: &quiver_catalog::CollectionDef,
    ) -> Result<(), QueryError> {
        if access::sees(&self.catalog, session.user(), def) {
            Ok(())
        } else {
            Err(
                quiver_catalog::CatalogError::from(quiver_auth::acl::AccessError::Denied(format!(
                    "{} holds no privilege on collection {}",
                    session.user(),
                    def.name
                )))
                .into(),
            )
        }
    }
}
