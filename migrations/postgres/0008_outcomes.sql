-- Per-user outcome aggregates on the exposure rows of features under a fuse, kept
-- current at ingest, so a scheduler pass reads one row per user instead of every
-- event (see src/domain/fuse/outcomes.rs). `fuses.outcome_names` records the event
-- names the aggregates were built for; null means not built yet (the scheduler builds
-- them from the stored events on its next look).
alter table exposures add column active_days bigint not null default 0;
alter table exposures add column first_activation bigint;
alter table exposures add column first_error bigint;
alter table exposures add column adopted boolean not null default false;
alter table exposures add column feedback_sum double precision not null default 0;
alter table exposures add column feedback_count bigint not null default 0;
alter table fuses add column outcome_names text;
