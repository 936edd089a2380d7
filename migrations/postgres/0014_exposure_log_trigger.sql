-- `exposure_log` is written by the database: a statement trigger on `exposures` logs
-- the rows each statement inserted (first exposures; an upsert's updates are not
-- new rows). Before, each ingest group logged its exposures itself, so a writer that
-- did not (a replica still running a binary older than 0012 during a rolling
-- upgrade, or rows loaded by hand) left other replicas' exposed-user filters without
-- those users, and their later events unfolded.
--
-- The trigger takes the outcome advisory lock (`OUTCOME_LOCK` in src/store/sql.rs),
-- which every exposure-writing ingest group already holds until it commits, so
-- `seq` stays gap-free and in commit order whoever writes. Every 128th row prunes
-- all but the newest 1024.
create function log_new_exposures() returns trigger language plpgsql as $$
declare
    logged bigint;
begin
    perform pg_advisory_xact_lock(7382934043424159793);
    insert into exposure_log (seq, environments, features, users)
    select (select coalesce(max(seq), 0) + 1 from exposure_log),
           array_agg(environment), array_agg(feature), array_agg(user_id)
    from added
    having count(*) > 0
    returning seq into logged;
    if logged % 128 = 0 then
        delete from exposure_log where seq <= logged - 1024;
    end if;
    return null;
end
$$;

create trigger exposures_logged after insert on exposures
    referencing new table as added
    for each statement execute function log_new_exposures();
