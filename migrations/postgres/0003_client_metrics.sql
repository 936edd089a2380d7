-- SDK registrations and hourly yes/no/variant counts from /api/client/metrics.
create table client_applications (
    app_name text not null,
    instance_id text not null,
    environment text not null,
    sdk_version text,
    strategies text not null,
    started_at bigint,
    interval_ms bigint,
    last_seen bigint not null,
    primary key (app_name, instance_id, environment)
);

create table client_metrics_hourly (
    feature text not null,
    environment text not null,
    hour_start bigint not null,
    yes bigint not null default 0,
    no bigint not null default 0,
    primary key (feature, environment, hour_start)
);

create table client_metrics_variants_hourly (
    feature text not null,
    environment text not null,
    hour_start bigint not null,
    variant text not null,
    count bigint not null default 0,
    primary key (feature, environment, hour_start, variant)
);
