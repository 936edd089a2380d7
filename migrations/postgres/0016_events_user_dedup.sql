-- The per-user event index keys by `user_id` alone. With `ts` in the key every event
-- was an index entry of its own; without it, B-tree deduplication keeps one key per
-- user and a 6-byte heap pointer per event (60 MB after 6.2M loadgen events). Every
-- event insert descends this index at a random user, and once it outgrew shared
-- buffers, COPY spent over a third of PostgreSQL's CPU getting index pages into them
-- (reading pages, writing back evicted ones). Readers want a user's events from t0
-- on, which is most of them, so checking `ts` on the rows found costs little.
create index events_user on events (user_id);
drop index events_user_ts;
