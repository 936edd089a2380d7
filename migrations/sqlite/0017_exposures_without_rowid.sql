-- `exposures` becomes one b-tree keyed by (environment, feature, user_id). As a
-- rowid table every exposure upsert and outcome write-back sought the primary-key
-- index and then the table row: two random b-tree descents per exposure where one
-- serves. Rows are about 100 bytes, well within what WITHOUT ROWID suits.
create table exposures_by_key (
    environment text not null,
    feature text not null,
    user_id text not null,
    enabled boolean not null,
    variant text,
    t0 bigint not null,
    last_seen bigint not null,
    exposure_count bigint not null,
    crossovers bigint not null,
    active_days bigint not null default 0,
    first_activation bigint,
    first_error bigint,
    adopted boolean not null default false,
    feedback_sum double precision not null default 0,
    feedback_count bigint not null default 0,
    primary key (environment, feature, user_id)
) without rowid;
insert into exposures_by_key (environment, feature, user_id, enabled, variant, t0, last_seen,
    exposure_count, crossovers, active_days, first_activation, first_error, adopted,
    feedback_sum, feedback_count)
select environment, feature, user_id, enabled, variant, t0, last_seen, exposure_count,
    crossovers, active_days, first_activation, first_error, adopted, feedback_sum,
    feedback_count
from exposures;
drop table exposures;
alter table exposures_by_key rename to exposures;
