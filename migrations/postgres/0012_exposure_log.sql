-- The exposures each ingest group wrote, numbered in commit order. Every replica
-- keeps an in-memory filter of which users have an exposure row per fused feature,
-- so outcome upkeep need not probe `exposures` for the many active users who never
-- saw the feature. A replica's filter only learns of its own writes directly; before
-- using it, a replica reads the rows numbered after the last one it applied.
--
-- `seq` is `max(seq) + 1`, assigned under the outcome advisory lock that every
-- exposure-writing group holds until it commits: the numbers are gap-free and in
-- commit order, so a reader that finds a gap knows rows were pruned and refills its
-- filter from `exposures` instead. Groups prune all but the newest rows.
create table exposure_log (
    seq bigint primary key,
    environments text[] not null,
    features text[] not null,
    users text[] not null
);
