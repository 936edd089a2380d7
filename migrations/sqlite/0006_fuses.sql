-- Fuses: one per (feature, environment), controlling one flexibleRollout strategy.
-- `version` makes every decision apply once: an update must name the version it read.
create table fuses (
    feature text not null references features(name) on delete cascade,
    environment text not null references environments(name),
    strategy_id text not null,
    config text not null,
    state text not null,
    status text not null,
    locked boolean not null default false,
    paused boolean not null default false,
    min_p text not null,
    rollout_history text not null,
    last_decision text,
    last_evaluated_at bigint,
    version bigint not null default 0,
    created_at bigint not null,
    updated_at bigint not null,
    primary key (feature, environment)
);

-- Analyses over time (one per decision that changed something, and at most hourly otherwise).
create table fuse_snapshots (
    id integer primary key autoincrement,
    feature text not null,
    environment text not null,
    created_at bigint not null,
    kind text not null,
    rule text not null,
    exposure_before double precision not null,
    exposure_after double precision not null,
    analysis text not null
);
create index fuse_snapshots_feature on fuse_snapshots(feature, environment, id);

-- The newest receipt time of events per environment, so "stale data" is one lookup.
create table ingest_watermarks (
    environment text primary key,
    last_received_at bigint not null
);
