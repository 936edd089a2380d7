-- Migration versions stay aligned across backends. PostgreSQL's 0016 re-keys its
-- per-user event index again; SQLite's events have no secondary index (see 0009).
select 1;
