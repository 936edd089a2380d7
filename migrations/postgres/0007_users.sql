-- People who log in to the web UI. Roles: viewer (read), editor (flags and fuses),
-- admin (also users and tokens). Passwords are argon2 PHC strings.
create table users (
    id bigserial primary key,
    email text not null unique,
    password_hash text not null,
    role text not null,
    created_at bigint not null,
    updated_at bigint not null
);

-- Server-generated secrets that must survive restarts and be shared by replicas
-- (the session-signing key when FUSEBOX_JWT_SECRET is not set).
create table server_secrets (
    name text primary key,
    value text not null,
    created_at bigint not null
);

-- Admin tokens carry a role too (null: admin), so a person can hold an API token
-- that can do no more than they can in the UI.
alter table api_tokens add column role text;

-- Ingestion counts per hour and environment ('' when a rejected batch named none),
-- kept by the event writer so the UI never scans the events table for them.
create table ingest_hourly (
    hour bigint not null,
    environment text not null,
    accepted bigint not null,
    duplicates bigint not null,
    quarantined bigint not null,
    primary key (hour, environment)
);
