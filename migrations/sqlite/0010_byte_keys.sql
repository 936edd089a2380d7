-- Migration versions stay aligned across backends. PostgreSQL's 0010 stores event ids
-- as uuid and gives hot text keys the "C" collation; SQLite already compares text
-- keys as bytes (BINARY) and keeps ids for dedup as 16-byte blobs in `event_ids`.
select 1;
