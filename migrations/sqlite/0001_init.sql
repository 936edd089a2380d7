-- Flag store, tokens and audit log. Timestamps are milliseconds since the epoch;
-- JSON columns hold the wire types of domain::model verbatim.
create table environments (
    name text primary key,
    type text not null,
    enabled boolean not null default true,
    sort_order bigint not null default 0,
    created_at bigint not null
);

create table projects (
    id text primary key,
    name text not null,
    description text,
    created_at bigint not null
);

create table features (
    name text primary key,
    project text not null references projects(id),
    description text,
    type text not null default 'release',
    impression_data boolean not null default false,
    stale boolean not null default false,
    archived_at bigint,
    created_at bigint not null
);
create index features_project on features(project);

create table feature_environments (
    feature text not null references features(name) on delete cascade,
    environment text not null references environments(name),
    enabled boolean not null default false,
    variants text,
    primary key (feature, environment)
);

create table feature_strategies (
    id text primary key,
    feature text not null references features(name) on delete cascade,
    environment text not null references environments(name),
    name text not null,
    title text,
    disabled boolean,
    sort_order bigint not null default 0,
    parameters text not null,
    constraints text not null,
    segments text,
    variants text,
    created_at bigint not null
);
create index feature_strategies_feature_env on feature_strategies(feature, environment);

create table feature_dependencies (
    child text not null references features(name) on delete cascade,
    parent text not null,
    enabled boolean,
    variants text,
    position bigint not null default 0,
    primary key (child, parent)
);

create table segments (
    id integer primary key,
    name text not null unique,
    description text,
    project text,
    constraints text not null,
    created_at bigint not null
);

create table api_tokens (
    id integer primary key autoincrement,
    name text not null,
    kind text not null,
    environment text not null,
    projects text not null,
    secret_hash text not null unique,
    created_at bigint not null
);

create table audit_events (
    id integer primary key autoincrement,
    kind text not null,
    created_by text not null,
    created_at bigint not null,
    project text,
    feature text,
    environment text,
    pre_data text,
    data text
);
create index audit_events_feature on audit_events(feature, id);
