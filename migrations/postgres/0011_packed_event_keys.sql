-- Migration versions stay aligned across backends. SQLite's 0011 packs its deferred
-- per-user event index into one row per user per run; PostgreSQL indexes `events`
-- directly and has no such table.
select 1;
