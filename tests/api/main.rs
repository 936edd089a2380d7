//! One integration-test binary (one link step): every module starts real servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod admin;
mod auth;
mod client;
mod crash;
mod events;
mod frontend;
mod fuses;
mod health;
mod matrix;
mod openapi;
mod otlp;
mod replicas;
mod robustness;
mod sdk;
mod state;
mod ui;
mod ui_e2e;
