-- Keys that every ingested event touches compare as bytes. Event ids are UUIDs (the
-- API normalises or derives them), so they are stored as `uuid`: 16 bytes compared
-- with memcmp instead of 36 characters through the database's collation. The text
-- keys of the per-user index and of exposures use the "C" collation, which compares
-- with memcmp too; a libc locale such as C.UTF-8 or en_US.UTF-8 calls strcoll on
-- every b-tree comparison, which profiles showed as the largest cost of ingest.
-- UTF-8's byte order is its code point order, so sorting is unchanged under C.UTF-8.
alter table events
    alter column id type uuid using id::uuid,
    alter column environment type text collate "C",
    alter column user_id type text collate "C";
alter table exposures
    alter column environment type text collate "C",
    alter column feature type text collate "C",
    alter column user_id type text collate "C";
