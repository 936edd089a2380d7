//! Fusebox: a feature-flag server, wire-compatible with Unleash SDKs, in which every
//! rollout has a fuse. `app::Application` builds the whole server; `main` and every
//! integration test use it.

pub mod api;
pub mod app;
pub mod bench_fuse;
pub mod config;
pub mod demo;
pub mod domain;
pub mod ingest;
pub mod loadgen;
pub mod metrics;
pub mod scheduler;
pub mod simulate;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod web;
