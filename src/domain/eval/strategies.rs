//! Activation strategies, compiled once with their segment constraints inlined.
//!
//! A strategy is on when all its constraints (its own, then its segments', in order)
//! match and its built-in rule accepts the context. Unknown strategy names and
//! references to missing segments compile to `Never`, as yggdrasil does.
//! `applicationHostname` compares against `properties["hostname"]`: evaluation is pure,
//! and the server's own host name says nothing about the caller's.

use std::collections::{BTreeMap, HashMap};

use rand::Rng;

use super::constraints::{parse_ip, parse_num, CompiledConstraint, IpNet, StrSet};
use super::context::{Context, ContextField};
use super::hash::{GroupHasher, ROLLOUT_SEED};
use super::variants::CompiledVariants;
use crate::domain::model::{Segment, Strategy};

/// A strategy ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct CompiledStrategy {
    kind: StrategyKind,
    constraints: Box<[CompiledConstraint]>,
    /// Strategy variants; `None` when the strategy has none, so feature variants apply.
    pub(crate) variants: Option<CompiledVariants>,
}

#[derive(Debug, Clone)]
enum StrategyKind {
    Default,
    UserWithId(StrSet),
    Rollout(Rollout),
    GradualRandom(f64),
    RemoteAddress { exact: StrSet, nets: Box<[IpNet]> },
    ApplicationHostname(StrSet),
    Never,
}

impl CompiledStrategy {
    pub(crate) fn compile(
        strategy: &Strategy,
        feature_name: &str,
        segments: &HashMap<i64, &Segment>,
    ) -> Self {
        let params = &strategy.parameters;
        let mut kind = match strategy.name.as_str() {
            "default" => StrategyKind::Default,
            "userWithId" => StrategyKind::UserWithId(StrSet::new(split_list(params, "userIds"))),
            "flexibleRollout" => StrategyKind::Rollout(Rollout::flexible(params, feature_name)),
            "gradualRolloutUserId" => {
                StrategyKind::Rollout(Rollout::legacy(params, ContextField::UserId))
            }
            "gradualRolloutSessionId" => {
                StrategyKind::Rollout(Rollout::legacy(params, ContextField::SessionId))
            }
            "gradualRolloutRandom" => StrategyKind::GradualRandom(percentage(params, "percentage")),
            "remoteAddress" => StrategyKind::RemoteAddress {
                exact: StrSet::new(split_list(params, "IPs")),
                nets: split_list(params, "IPs").filter_map(IpNet::parse).collect(),
            },
            "applicationHostname" => {
                let hosts: Vec<String> = split_list(params, "hostNames")
                    .map(str::to_lowercase)
                    .collect();
                StrategyKind::ApplicationHostname(StrSet::new(hosts.iter().map(String::as_str)))
            }
            _ => StrategyKind::Never,
        };

        let mut constraints: Vec<CompiledConstraint> = strategy
            .constraints
            .iter()
            .map(CompiledConstraint::compile)
            .collect();
        for id in strategy.segments.iter().flatten() {
            match segments.get(id) {
                Some(segment) => {
                    constraints.extend(segment.constraints.iter().map(CompiledConstraint::compile))
                }
                None => kind = StrategyKind::Never,
            }
        }

        let variants = strategy.variants.as_deref().and_then(|variants| {
            let group_id = non_empty_param(params, "groupId").unwrap_or(feature_name);
            CompiledVariants::compile(
                variants,
                Stickiness::parse(non_empty_param(params, "stickiness")),
                group_id,
            )
        });

        Self {
            kind,
            constraints: constraints.into_boxed_slice(),
            variants,
        }
    }

    /// Whether the strategy accepts `ctx`. `Never` short-circuits before constraints.
    #[inline]
    pub(crate) fn is_enabled(&self, ctx: &Context) -> bool {
        !matches!(self.kind, StrategyKind::Never)
            && self.constraints.iter().all(|c| c.matches(ctx))
            && self.kind.is_enabled(ctx)
    }
}

impl StrategyKind {
    #[inline]
    fn is_enabled(&self, ctx: &Context) -> bool {
        match self {
            StrategyKind::Default => true,
            StrategyKind::UserWithId(ids) => {
                non_empty(&ctx.user_id).is_some_and(|id| ids.contains(id))
            }
            StrategyKind::Rollout(rollout) => rollout.contains(ctx),
            StrategyKind::GradualRandom(percentage) => f64::from(random_bucket(100)) <= *percentage,
            StrategyKind::RemoteAddress { exact, nets } => non_empty(&ctx.remote_address)
                .is_some_and(|addr| {
                    exact.contains(addr)
                        || parse_ip(addr).is_some_and(|ip| nets.iter().any(|n| n.contains(ip)))
                }),
            StrategyKind::ApplicationHostname(hosts) => ctx
                .property("hostname")
                .is_some_and(|h| hosts.contains(&h.to_lowercase())),
            StrategyKind::Never => false,
        }
    }
}

/// Which context value buckets a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stickiness {
    /// `userId`, else `sessionId`, else a random bucket.
    Default,
    Random,
    Field(ContextField),
}

impl Stickiness {
    pub(crate) fn parse(name: Option<&str>) -> Self {
        match name {
            None | Some("default") => Stickiness::Default,
            Some("random") => Stickiness::Random,
            Some(field) => Stickiness::Field(ContextField::parse(field)),
        }
    }
}

/// A percentage rollout: `flexibleRollout` or the legacy `gradualRollout{UserId,SessionId}`.
#[derive(Debug, Clone)]
pub(crate) struct Rollout {
    /// Percentage 0..=100; NaN (missing or unparseable) never matches.
    percentage: f64,
    stickiness: Stickiness,
    /// Seed-0 hash state after `"{groupId}:"`.
    hasher: GroupHasher,
}

impl Rollout {
    /// `flexibleRollout`: `rollout`, `stickiness`, `groupId` (default: the feature name).
    pub(crate) fn flexible(params: &BTreeMap<String, String>, feature_name: &str) -> Self {
        Self {
            percentage: percentage(params, "rollout"),
            stickiness: Stickiness::parse(non_empty_param(params, "stickiness")),
            hasher: GroupHasher::new(
                non_empty_param(params, "groupId").unwrap_or(feature_name),
                ROLLOUT_SEED,
            ),
        }
    }

    /// Legacy rollouts: `percentage`, `groupId` (default: empty), fixed stickiness.
    fn legacy(params: &BTreeMap<String, String>, field: ContextField) -> Self {
        Self {
            percentage: percentage(params, "percentage"),
            stickiness: Stickiness::Field(field),
            hasher: GroupHasher::new(
                non_empty_param(params, "groupId").unwrap_or(""),
                ROLLOUT_SEED,
            ),
        }
    }

    /// Whether the context's bucket (1..=100) is within the rollout. A custom
    /// stickiness field missing from the context is out, never random.
    #[inline]
    pub(crate) fn contains(&self, ctx: &Context) -> bool {
        if self.percentage.is_nan() || self.percentage <= 0.0 {
            return false;
        }
        let bucket = match &self.stickiness {
            Stickiness::Default => ctx
                .default_stickiness_id()
                .map_or_else(|| random_bucket(100), |id| self.bucket(id)),
            Stickiness::Random => random_bucket(100),
            Stickiness::Field(field) => match field.resolve(ctx) {
                Some(id) => self.bucket(id),
                None => return false,
            },
        };
        f64::from(bucket) <= self.percentage
    }

    #[inline]
    fn bucket(&self, id: &str) -> u32 {
        self.hasher.hash(id) % 100 + 1
    }
}

/// A uniformly random bucket in `1..=modulus` (`modulus` must be positive).
#[inline]
pub(crate) fn random_bucket(modulus: u32) -> u32 {
    rand::rng().random_range(1..=modulus.max(1))
}

fn percentage(params: &BTreeMap<String, String>, key: &str) -> f64 {
    params
        .get(key)
        .and_then(|v| parse_num(v))
        .unwrap_or(f64::NAN)
}

fn non_empty_param<'p>(params: &'p BTreeMap<String, String>, key: &str) -> Option<&'p str> {
    params
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A comma-separated parameter, items trimmed, empty items dropped.
fn split_list<'p>(
    params: &'p BTreeMap<String, String>,
    key: &str,
) -> impl Iterator<Item = &'p str> {
    params
        .get(key)
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[inline]
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(name: &str, params: &[(&str, &str)]) -> Strategy {
        Strategy {
            id: None,
            name: name.into(),
            title: None,
            disabled: None,
            sort_order: None,
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            constraints: vec![],
            segments: None,
            variants: None,
        }
    }

    fn enabled(s: &Strategy, ctx: &Context) -> bool {
        CompiledStrategy::compile(s, "feature", &HashMap::new()).is_enabled(ctx)
    }

    #[test]
    fn remote_address_matches_exact_entries_and_cidr_ranges_and_skips_garbage() {
        let s = strategy(
            "remoteAddress",
            &[("IPs", "10.0.0.1, bogus, 192.168.0.0/16 ,::1")],
        );
        let at = |ip: &str| Context {
            remote_address: Some(ip.into()),
            ..Context::default()
        };
        assert!(enabled(&s, &at("10.0.0.1")));
        assert!(enabled(&s, &at("192.168.44.2")));
        assert!(enabled(&s, &at("::1")));
        assert!(!enabled(&s, &at("10.0.0.2")));
        assert!(!enabled(&s, &Context::default()));
    }

    #[test]
    fn application_hostname_reads_the_hostname_property_case_insensitively() {
        let s = strategy("applicationHostname", &[("hostNames", "Web-1, web-2")]);
        assert!(enabled(
            &s,
            &Context::default().with_property("hostname", "WEB-1")
        ));
        assert!(!enabled(
            &s,
            &Context::default().with_property("hostname", "web-3")
        ));
        assert!(!enabled(&s, &Context::default()));
    }

    #[test]
    fn flexible_rollout_with_a_missing_custom_field_is_off_even_at_100_percent() {
        let s = strategy(
            "flexibleRollout",
            &[("rollout", "100"), ("stickiness", "tenant")],
        );
        assert!(!enabled(&s, &Context::default()));
        assert!(enabled(
            &s,
            &Context::default().with_property("tenant", "t1")
        ));
    }

    #[test]
    fn rollouts_with_missing_or_garbage_percentages_are_off() {
        for params in [&[][..], &[("rollout", "lots")][..], &[("rollout", "0")][..]] {
            let s = strategy("flexibleRollout", params);
            assert!(!enabled(&s, &Context::for_user("1")), "{params:?}");
        }
    }

    #[test]
    fn default_stickiness_without_ids_buckets_randomly_so_100_percent_is_on() {
        let s = strategy("flexibleRollout", &[("rollout", "100")]);
        assert!(enabled(&s, &Context::default()));
    }

    #[test]
    fn unknown_strategies_and_missing_segments_are_off() {
        assert!(!enabled(
            &strategy("myCustomStrategy", &[]),
            &Context::default()
        ));
        let mut s = strategy("default", &[]);
        s.segments = Some(vec![404]);
        assert!(!enabled(&s, &Context::default()));
    }

    #[test]
    fn user_with_id_ignores_empty_list_entries_and_empty_user_ids() {
        let s = strategy("userWithId", &[("userIds", "a,, b ,")]);
        assert!(enabled(&s, &Context::for_user("b")));
        assert!(!enabled(&s, &Context::for_user("")));
    }
}
