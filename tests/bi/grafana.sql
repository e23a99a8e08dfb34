-- Grafana PostgreSQL data source: connection test, version detection and query-editor metadata lookups.
-- Texts assembled from the template literals in the cited files (whitespace preserved); table items, schema public.
-- The Grafana backend (pgx v5, formerly lib/pq) sends editor queries through the /api/ds/query path as ordinary queries.

-- grafana/grafana pkg/tsdb/grafana-postgresql-datasource/pgx/handler_checkhealth.go: "Save & test" health check -> pgxpool Ping -> pgconn.Ping sends this simple query (jackc/pgx pgconn/pgconn.go)
-- ping
;
-- grafana/grafana pkg/tsdb/grafana-postgresql-datasource/sqleng/handler_checkhealth.go: health check on the older lib/pq engine -> lib/pq conn.Ping sends an empty simple query ";" (lib/pq conn_go18.go)

;
-- grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts: getVersion() - version auto-detection in the data source config page (useAutoDetectFeatures.ts)
SELECT current_setting('server_version_num')::int/100 as version
;
-- grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts: getTimescaleDBVersion() - TimescaleDB detection (server_version_num/100 >= 906)
SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'
;
-- grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts: showSchemas() - schema list
SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema',
                              'pg_catalog',
                              'pg_toast',
                              '_timescaledb_cache',
                              '_timescaledb_catalog',
                              '_timescaledb_internal',
                              '_timescaledb_config',
                              'timescaledb_information',
                              'timescaledb_experimental')
    ORDER BY schema_name
;
-- grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts: showTables() - table list of the query builder / code-editor completion (datasource.ts fetchTables)
SELECT
    CASE WHEN 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          ) THEN 0 ELSE 1 END, 1
;
-- grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts: showTables('public') - table list restricted to one schema
SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = 'public'
      ORDER BY 1
;
-- grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts: getSchema('items') - column list of a table (datasource.ts fetchFields)
SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('items'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('items'))[1]
          AND quote_ident(table_name) = (parse_ident('items'))[2]
        ELSE quote_ident(table_name) = 'items'
          AND 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )
      END
;
-- grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts: getSchema('public.items') - column list of a schema-qualified table
SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('public.items'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('public.items'))[1]
          AND quote_ident(table_name) = (parse_ident('public.items'))[2]
        ELSE quote_ident(table_name) = 'public.items'
          AND 
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )
      END
;
-- grafana/grafana pkg/tsdb/grafana-postgresql-datasource/schema.go: querySchemas() - backend schema handler (grafana/schemads)
SELECT schema_name FROM information_schema.schemata
		 WHERE schema_name NOT LIKE 'pg_%' AND schema_name != 'information_schema'
		 ORDER BY schema_name
;
-- grafana/grafana pkg/tsdb/grafana-postgresql-datasource/schema.go: queryTables() - backend schema handler ($1 = 'public')
SELECT table_name FROM information_schema.tables
		 WHERE table_schema = 'public' AND table_type IN ('BASE TABLE', 'VIEW')
		 ORDER BY table_name
;
-- grafana/grafana pkg/tsdb/grafana-postgresql-datasource/schema.go: queryColumns() - backend schema handler ($1 = 'public', $2 = 'items')
SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale
		 FROM information_schema.columns
		 WHERE table_schema = 'public' AND table_name = 'items'
		 ORDER BY ordinal_position
;
-- grafana/grafana pkg/tsdb/grafana-postgresql-datasource/schema.go: ColumnValues() - distinct values of columns (columns name, category of public.items)
SELECT 'name' AS col_name, "name"::text AS val FROM (SELECT DISTINCT "name" FROM "public"."items" WHERE "name" IS NOT NULL ORDER BY "name" LIMIT 100) sub_0 UNION ALL SELECT 'category' AS col_name, "category"::text AS val FROM (SELECT DISTINCT "category" FROM "public"."items" WHERE "category" IS NOT NULL ORDER BY "category" LIMIT 100) sub_1
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: findMetricTable() - legacy (Grafana <= 9) query builder default table

SELECT
	quote_ident(table_name) as table_name,
	( SELECT
	    quote_ident(column_name) as column_name
	  FROM information_schema.columns c
    WHERE
      c.table_schema = t.table_schema AND
      c.table_name = t.table_name AND
      udt_name IN ('timestamptz','timestamp')
    ORDER BY ordinal_position LIMIT 1
  ) AS time_column,
  ( SELECT
      quote_ident(column_name) AS column_name
    FROM information_schema.columns c
    WHERE
      c.table_schema = t.table_schema AND
      c.table_name = t.table_name AND
      udt_name='float8'
    ORDER BY ordinal_position LIMIT 1
  ) AS value_column
FROM information_schema.tables t
WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND
  EXISTS
  ( SELECT 1
    FROM information_schema.columns c
    WHERE
      c.table_schema = t.table_schema AND
      c.table_name = t.table_name AND
      udt_name IN ('timestamptz','timestamp')
  ) AND
  EXISTS
  ( SELECT 1
    FROM information_schema.columns c
    WHERE
      c.table_schema = t.table_schema AND
      c.table_name = t.table_name AND
      udt_name='float8'
  )
LIMIT 1
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildTableQuery() - legacy query builder table list
SELECT quote_ident(table_name) FROM information_schema.tables WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) ORDER BY table_name
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildColumnQuery() - legacy column list of 'items'
SELECT quote_ident(column_name) FROM information_schema.columns WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND table_name = 'items' ORDER BY column_name
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildColumnQuery('time') - legacy time-column candidates of 'items'
SELECT quote_ident(column_name) FROM information_schema.columns WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND table_name = 'items' AND data_type IN ('timestamp without time zone','timestamp with time zone','bigint','integer','double precision','real') ORDER BY column_name
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildColumnQuery('metric') - legacy metric-column candidates of 'public.items'
SELECT quote_ident(column_name) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'items' AND data_type IN ('text','character','character varying') ORDER BY column_name
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildColumnQuery('value') - legacy value-column candidates of 'items' (time column created_at)
SELECT quote_ident(column_name) FROM information_schema.columns WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND table_name = 'items' AND data_type IN ('bigint','integer','double precision','real','numeric') AND column_name <> 'created_at' ORDER BY column_name
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildColumnQuery('group') - legacy group-by candidates of 'items'
SELECT quote_ident(column_name) FROM information_schema.columns WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND table_name = 'items' AND data_type IN ('text','character','character varying','uuid') ORDER BY column_name
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildDatatypeQuery('price') - legacy column type lookup
SELECT udt_name FROM information_schema.columns WHERE 
table_schema IN (
  SELECT
    CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
  FROM
    generate_series(
      array_lower(string_to_array(current_setting('search_path'),','),1),
      array_upper(string_to_array(current_setting('search_path'),','),1)
    ) as i,
    string_to_array(current_setting('search_path'),',') s
) AND table_name = 'items' AND column_name = 'price'
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildAggregateQuery() - legacy list of aggregate functions
SELECT DISTINCT proname FROM pg_aggregate INNER JOIN pg_proc ON pg_aggregate.aggfnoid = pg_proc.oid INNER JOIN pg_type ON pg_type.oid=pg_proc.prorettype WHERE pronargs=1 AND typname IN ('float8') AND aggkind='n' ORDER BY 1
;
-- grafana/grafana public/app/plugins/datasource/postgres/meta_query.ts: buildValueQuery('category') - legacy WHERE-value suggestions ($__timeFilter expanded as the backend macro engine does, fixed range)
SELECT DISTINCT quote_literal(category) FROM items WHERE created_at BETWEEN '2024-01-01T00:00:00Z' AND '2024-01-01T06:00:00Z' AND category IS NOT NULL ORDER BY 1 LIMIT 100
;
