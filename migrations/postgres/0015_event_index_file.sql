-- Migration versions stay aligned across backends. SQLite's 0015 moves its deferred
-- event index into a file of its own; PostgreSQL indexes events as it stores them.
select 1;
