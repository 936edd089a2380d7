-- The event index tables (`event_ids`, `event_keys`, `event_runs`, `event_index`)
-- move to their own file beside the database, written by a mover thread in parallel
-- with the ingest writer (SQLite allows one writer per file). They are derived from
-- `events`: the server builds the new file from `events` when it is missing, so the
-- copies here are dropped, not carried over. See src/store/tail.rs.
drop table event_ids;
drop table event_keys;
drop table event_runs;
drop table event_index;
