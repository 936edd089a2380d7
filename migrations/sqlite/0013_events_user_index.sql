-- Migration versions stay aligned across backends. PostgreSQL's 0013 re-keys its
-- per-user event index; SQLite's events have no secondary index (see 0009).
select 1;
