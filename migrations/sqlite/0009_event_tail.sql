-- Events keep their arrival order (`seq`, never reused) and no secondary index: the
-- newest events are indexed in memory and moved into `event_ids` (dedup) and
-- `event_keys` (a user's events, for late-exposure recomputes) in sorted slices.
-- `event_index.upto` is the highest seq those tables answer for. See src/store/tail.rs.
create table events_by_seq (
    seq integer primary key autoincrement,
    id text not null,
    environment text not null,
    kind text not null,
    user_id text not null,
    feature text,
    name text,
    enabled boolean,
    variant text,
    score double precision,
    session_id text,
    properties text,
    ts bigint not null,
    received_at bigint not null
);
insert into events_by_seq (id, environment, kind, user_id, feature, name, enabled, variant, score,
                           session_id, properties, ts, received_at)
    select id, environment, kind, user_id, feature, name, enabled, variant, score,
           session_id, properties, ts, received_at
    from events order by rowid;
drop table events;
alter table events_by_seq rename to events;

create table event_ids (id blob primary key) without rowid;
insert into event_ids (id) select unhex(replace(id, '-', '')) from events;

-- A user's events, in runs: each moved generation is one run (numbered by its highest
-- seq), so a move only appends, and a lookup probes the runs that can hold events
-- after the time it asks about (`event_runs` keeps each run's span of event times).
create table event_keys (
    run integer not null,
    environment text not null,
    user_id text not null,
    ts bigint not null,
    event integer not null,
    primary key (run, environment, user_id, ts, event)
) without rowid;
create table event_runs (
    run integer primary key,
    min_ts bigint not null,
    max_ts bigint not null
);
create table event_index (upto integer not null);
insert into event_index (upto) select coalesce(max(seq), 0) from events;
insert into event_keys (run, environment, user_id, ts, event)
    select (select upto from event_index), environment, user_id, ts, seq from events;
insert into event_runs (run, min_ts, max_ts)
    select (select upto from event_index), min(ts), max(ts) from events having count(*) > 0;
