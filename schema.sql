-- bank_graphql database schema, for reading and for psql: the numbered migrations the
-- package ships (bank_graphql/ledger/sql/migrations/), in order. `psql -f schema.sql`
-- builds the current schema on an empty database but records no version; the program's
-- own `bank-graphql migrate` applies the same files and records each in schema_version.
--
-- Money and timestamps are bigint: money in minor units, time in ms since the Unix epoch.
-- Both stay within 0 .. 2^53-1 (9007199254740991) so they survive JSON clients exactly.

\ir bank_graphql/ledger/sql/migrations/0001_first_release.sql
\ir bank_graphql/ledger/sql/migrations/0002_saturating_outgoing.sql
\ir bank_graphql/ledger/sql/migrations/0003_write_functions.sql
\ir bank_graphql/ledger/sql/migrations/0004_mutations.sql
\ir bank_graphql/ledger/sql/migrations/0005_access.sql
\ir bank_graphql/ledger/sql/migrations/0006_live_feed.sql
\ir bank_graphql/ledger/sql/migrations/0007_hash_chain.sql
