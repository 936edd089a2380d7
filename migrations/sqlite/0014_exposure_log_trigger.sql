-- Migration versions stay aligned across backends. PostgreSQL's 0014 logs new
-- exposure rows by trigger; SQLite has one writer and no `exposure_log`.
select 1;
