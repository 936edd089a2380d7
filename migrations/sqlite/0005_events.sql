-- Ingested events (append-only), first exposures per user (the cohort), quarantine.
create table events (
    id text primary key,
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
create index events_env_user_ts on events(environment, user_id, ts);

-- The first exposure of (environment, feature, user) fixes the cohort and t0
-- (intention-to-treat); later exposures with another assignment are crossovers.
create table exposures (
    environment text not null,
    feature text not null,
    user_id text not null,
    enabled boolean not null,
    variant text,
    t0 bigint not null,
    last_seen bigint not null,
    exposure_count bigint not null,
    crossovers bigint not null,
    primary key (environment, feature, user_id)
);

create table quarantine (
    id integer primary key autoincrement,
    received_at bigint not null,
    environment text,
    token_name text,
    reason text not null,
    message text not null,
    raw text not null
);
create index quarantine_reason on quarantine(reason, id);
