-- Migration versions stay aligned across backends. SQLite's 0009 moved its event
-- indexes into tables filled in sorted slices from an in-memory tail (see
-- src/store/tail.rs); PostgreSQL keeps ordinary indexes, because several writers and
-- replicas share its tables and no process may hold part of an index in memory.
select 1;
