-- Migration versions stay aligned across backends. PostgreSQL's 0012 adds the log
-- through which replicas share which users have exposure rows; SQLite has one
-- writer, which sees every exposure row it writes.
select 1;
