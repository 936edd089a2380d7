-- Feature tags (`type:value`), used by the client API's `tag` filter.
create table feature_tags (
    feature text not null references features(name) on delete cascade,
    tag_type text not null,
    value text not null,
    created_at bigint not null,
    primary key (feature, tag_type, value)
);
