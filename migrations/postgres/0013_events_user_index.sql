-- The per-user event index leads with `user_id` alone. Every event insert descends
-- it at a random place, and with `environment` first each comparison on the way
-- compared the (nearly always equal) environment before the user. Readers still
-- name the environment; it is checked on the rows the index finds. Export and
-- erasure, which look a user up in every environment, can now use it too.
create index events_user_ts on events (user_id, ts);
drop index events_env_user_ts;
