-- `event_keys` holds one row per user per run instead of one per event: the user's
-- event seqs in the run as a JSON array, with the span of their times. Moving a
-- generation then inserts one row per user it saw (a quarter of the rows under
-- `fusebox loadgen`, fewer when users are active for longer than a generation), and
-- each insert seeks the b-tree by text keys: the per-event rows cost the ingest
-- writer about 0.9 µs per event. Lookups read a user's row per run and join the seqs.
create table event_keys_by_user (
    run integer not null,
    environment text not null,
    user_id text not null,
    min_ts bigint not null,
    max_ts bigint not null,
    events text not null,
    primary key (run, environment, user_id)
) without rowid;
insert into event_keys_by_user (run, environment, user_id, min_ts, max_ts, events)
    select run, environment, user_id, min(ts), max(ts), json_group_array(event)
    from event_keys
    group by run, environment, user_id;
drop table event_keys;
alter table event_keys_by_user rename to event_keys;
