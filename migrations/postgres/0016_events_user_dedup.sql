-- The per-user event index keys by `user_id` alone. With `ts` in the key every event
-- was an index entry of its own (about 36 bytes); without it, B-tree deduplication
-- keeps one key per user and a 6-byte heap pointer per event, so the index is a
-- fraction of the size. Every event insert descends it at a random user, and when it
-- outgrew shared_buffers, inserts spent a third of PostgreSQL's time reading and
-- writing evicted pages. Readers want all of a user's events from t0 on, which is
-- most of them, so checking `ts` on the rows found costs little.
create index events_user on events (user_id);
drop index events_user_ts;
