-- Migration versions stay aligned across backends. SQLite's 0017 rebuilds
-- `exposures` without rowids; PostgreSQL's tables have none to drop.
select 1;
