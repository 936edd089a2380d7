//! Unleash-exact flag evaluation.
//!
//! [`Engine::new`] compiles a [`ClientFeatures`] document once: strategies with their
//! segments inlined, constraint operands pre-parsed, dependencies resolved to indices.
//! Evaluation is then pure lookups and comparisons. Semantics follow the Unleash
//! client specification (all 279 cases pass, see `spec_tests`), hashing follows
//! yggdrasil (UTF-8 bytes), and context handling follows the Node SDK that Unleash's
//! own frontend API runs.
//!
//! Where the wire format allows input Unleash never sends, the engine picks the safe
//! reading and says so: an unusable constraint is false even when inverted, and a
//! strategy marked `disabled` is dropped as the Unleash server drops it before SDKs
//! see it (so a flag whose strategies are all disabled is on, like one with none).

mod constraints;
mod context;
mod hash;
mod strategies;
mod variants;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod spec_tests;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

pub use context::Context;
pub use hash::{murmur3_x86_32, normalized_hash, ROLLOUT_SEED, VARIANT_SEED};
pub use variants::{VariantResult, DISABLED_VARIANT};

use crate::domain::model::{ClientFeature, ClientFeatures, Segment};
use hash::FastHash;
use strategies::{CompiledStrategy, Rollout};
use variants::{CompiledVariant, CompiledVariants};

/// Whether `ctx` falls inside a `flexibleRollout` bucket, given the strategy's
/// parameters (`rollout`, `stickiness`, `groupId`) and its feature's name.
///
/// Uses the same code as evaluation; constraints are not considered. It compiles the
/// parameters on each call, so hot paths should evaluate through an [`Engine`].
pub fn in_rollout(
    feature_name: &str,
    parameters: &BTreeMap<String, String>,
    ctx: &Context,
) -> bool {
    Rollout::flexible(parameters, feature_name).contains(ctx)
}

/// One flag evaluated for one context: what the frontend API and OFREP report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagEvaluation<'e> {
    pub name: &'e str,
    pub enabled: bool,
    pub impression_data: bool,
    pub variant: VariantResult,
}

/// A compiled, immutable set of flags. Cheap to share across threads.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    features: Box<[CompiledFeature]>,
    index: HashMap<Box<str>, usize, FastHash>,
}

#[derive(Debug, Clone)]
struct CompiledFeature {
    name: Box<str>,
    enabled: bool,
    impression_data: bool,
    strategies: Box<[CompiledStrategy]>,
    variants: Option<CompiledVariants>,
    dependencies: Box<[CompiledDependency]>,
}

#[derive(Debug, Clone)]
struct CompiledDependency {
    /// Index of the parent; `None` when it is missing or itself has parents, since
    /// Unleash allows one level only (which also rules out cycles).
    parent: Option<usize>,
    expect_enabled: bool,
    /// Accepted parent variants; empty means any.
    variants: Box<[Box<str>]>,
}

/// Outcome of the enabled check: which strategy (if any) switched the flag on.
enum Resolution<'e> {
    Off,
    On(Option<&'e CompiledStrategy>),
}

impl Engine {
    /// Compiles `features`. Never fails: unusable parts evaluate to false.
    pub fn new(features: &ClientFeatures) -> Self {
        // Later duplicates replace earlier ones in place, as a name-keyed store would.
        let mut index: HashMap<Box<str>, usize, FastHash> = HashMap::default();
        let mut sources: Vec<&ClientFeature> = Vec::with_capacity(features.features.len());
        for feature in &features.features {
            match index.get(feature.name.as_str()) {
                Some(&slot) => sources[slot] = feature,
                None => {
                    index.insert(feature.name.as_str().into(), sources.len());
                    sources.push(feature);
                }
            }
        }
        let segments: HashMap<i64, &Segment> = features
            .segments
            .iter()
            .flatten()
            .map(|s| (s.id, s))
            .collect();
        let has_parents =
            |f: &ClientFeature| f.dependencies.as_ref().is_some_and(|d| !d.is_empty());

        let compiled = sources
            .iter()
            .map(|feature| {
                let mut active: Vec<_> = feature
                    .strategies
                    .iter()
                    .filter(|s| s.disabled != Some(true))
                    .collect();
                // The server sends strategies sorted by sortOrder; sort when every
                // strategy has one so first-match variant choice is the server's.
                if active.iter().all(|s| s.sort_order.is_some()) {
                    active.sort_by_key(|s| s.sort_order);
                }
                let dependencies = feature
                    .dependencies
                    .iter()
                    .flatten()
                    .map(|d| CompiledDependency {
                        parent: index
                            .get(d.feature.as_str())
                            .copied()
                            .filter(|&p| !has_parents(sources[p])),
                        expect_enabled: d.enabled.unwrap_or(true),
                        variants: d
                            .variants
                            .iter()
                            .flatten()
                            .map(|v| v.as_str().into())
                            .collect(),
                    })
                    .collect();
                CompiledFeature {
                    name: feature.name.as_str().into(),
                    enabled: feature.enabled,
                    impression_data: feature.impression_data.unwrap_or(false),
                    strategies: active
                        .into_iter()
                        .map(|s| CompiledStrategy::compile(s, &feature.name, &segments))
                        .collect(),
                    variants: feature
                        .variants
                        .as_deref()
                        .and_then(|v| CompiledVariants::for_feature(v, &feature.name)),
                    dependencies,
                }
            })
            .collect();
        Self {
            features: compiled,
            index,
        }
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Whether a flag of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Flag names, in input order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| &*f.name)
    }

    /// Whether the flag is on for `ctx`; unknown flags are off.
    pub fn is_enabled(&self, name: &str, ctx: &Context) -> bool {
        self.feature(name)
            .is_some_and(|f| matches!(self.resolve(f, ctx), Resolution::On(_)))
    }

    /// The variant for `ctx`; unknown or disabled flags give the `"disabled"` variant.
    pub fn get_variant(&self, name: &str, ctx: &Context) -> VariantResult {
        match self.feature(name) {
            Some(f) => self.variant_result(f, self.resolve(f, ctx), ctx),
            None => VariantResult::disabled(false),
        }
    }

    /// Full evaluation of one flag; `None` means the flag does not exist.
    pub fn evaluate(&self, name: &str, ctx: &Context) -> Option<FlagEvaluation<'_>> {
        self.feature(name).map(|f| self.evaluate_feature(f, ctx))
    }

    /// Every flag evaluated for `ctx`, in input order, enabled or not.
    pub fn evaluate_all<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Iterator<Item = FlagEvaluation<'a>> + 'a {
        self.features
            .iter()
            .map(move |f| self.evaluate_feature(f, ctx))
    }

    #[inline]
    fn feature(&self, name: &str) -> Option<&CompiledFeature> {
        self.index.get(name).and_then(|&i| self.features.get(i))
    }

    fn evaluate_feature<'e>(&'e self, f: &'e CompiledFeature, ctx: &Context) -> FlagEvaluation<'e> {
        let resolution = self.resolve(f, ctx);
        FlagEvaluation {
            name: &f.name,
            enabled: matches!(resolution, Resolution::On(_)),
            impression_data: f.impression_data,
            variant: self.variant_result(f, resolution, ctx),
        }
    }

    /// Feature switch, then parents, then strategies (first match wins).
    fn resolve<'e>(&'e self, f: &'e CompiledFeature, ctx: &Context) -> Resolution<'e> {
        if !f.enabled || !self.dependencies_satisfied(f, ctx) {
            return Resolution::Off;
        }
        if f.strategies.is_empty() {
            return Resolution::On(None);
        }
        f.strategies
            .iter()
            .find(|s| s.is_enabled(ctx))
            .map_or(Resolution::Off, |s| Resolution::On(Some(s)))
    }

    fn dependencies_satisfied(&self, f: &CompiledFeature, ctx: &Context) -> bool {
        f.dependencies.iter().all(|dep| {
            let Some(parent) = dep.parent.and_then(|p| self.features.get(p)) else {
                return false;
            };
            let resolution = self.resolve(parent, ctx);
            let parent_on = matches!(resolution, Resolution::On(_));
            if !dep.expect_enabled {
                return !parent_on;
            }
            if !parent_on {
                return false;
            }
            if dep.variants.is_empty() {
                return true;
            }
            let name = self
                .select_variant(parent, resolution, ctx)
                .map_or(DISABLED_VARIANT, |v| &*v.name);
            dep.variants.iter().any(|v| **v == *name)
        })
    }

    /// Strategy variants of the matching strategy win over feature variants.
    fn select_variant<'e>(
        &'e self,
        f: &'e CompiledFeature,
        resolution: Resolution<'e>,
        ctx: &Context,
    ) -> Option<&'e CompiledVariant> {
        let Resolution::On(strategy) = resolution else {
            return None;
        };
        strategy
            .and_then(|s| s.variants.as_ref())
            .or(f.variants.as_ref())
            .and_then(|v| v.select(ctx))
    }

    fn variant_result<'e>(
        &'e self,
        f: &'e CompiledFeature,
        resolution: Resolution<'e>,
        ctx: &Context,
    ) -> VariantResult {
        let on = matches!(resolution, Resolution::On(_));
        self.select_variant(f, resolution, ctx)
            .map_or_else(|| VariantResult::disabled(on), VariantResult::chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine(doc: serde_json::Value) -> Engine {
        let features: ClientFeatures =
            serde_json::from_value(doc).unwrap_or_else(|e| panic!("bad fixture: {e}"));
        Engine::new(&features)
    }

    #[test]
    fn the_engine_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }

    #[test]
    fn evaluate_distinguishes_an_unknown_flag_from_a_disabled_one() {
        let e = engine(json!({"version": 2, "features": [
            {"name": "off", "enabled": false, "strategies": []}
        ]}));
        assert!(e.evaluate("missing", &Context::default()).is_none());
        let off = e.evaluate("off", &Context::default());
        assert_eq!(
            off.map(|f| (f.enabled, f.variant.feature_enabled)),
            Some((false, false))
        );
    }

    #[test]
    fn disabled_strategies_are_skipped_and_all_disabled_behaves_like_none() {
        let e = engine(json!({"version": 2, "features": [
            {"name": "mixed", "enabled": true, "strategies": [
                {"name": "default", "disabled": true},
                {"name": "userWithId", "parameters": {"userIds": "1"}}
            ]},
            {"name": "all-disabled", "enabled": true, "strategies": [
                {"name": "userWithId", "disabled": true, "parameters": {"userIds": "1"}}
            ]}
        ]}));
        assert!(!e.is_enabled("mixed", &Context::for_user("2")));
        assert!(e.is_enabled("mixed", &Context::for_user("1")));
        assert!(e.is_enabled("all-disabled", &Context::for_user("2")));
    }

    #[test]
    fn strategies_are_tried_in_sort_order_when_every_strategy_has_one() {
        let e = engine(json!({"version": 2, "features": [
            {"name": "f", "enabled": true, "strategies": [
                {"name": "default", "sortOrder": 2, "variants": [{"name": "second", "weight": 1}]},
                {"name": "default", "sortOrder": 1, "variants": [{"name": "first", "weight": 1}]}
            ]}
        ]}));
        assert_eq!(e.get_variant("f", &Context::default()).name, "first");
    }

    #[test]
    fn evaluate_all_reports_every_flag_with_impression_data() {
        let e = engine(json!({"version": 2, "features": [
            {"name": "a", "enabled": true, "impressionData": true},
            {"name": "b", "enabled": false}
        ]}));
        let ctx = Context::default();
        let all: Vec<_> = e
            .evaluate_all(&ctx)
            .map(|f| (f.name, f.enabled, f.impression_data))
            .collect();
        assert_eq!(all, vec![("a", true, true), ("b", false, false)]);
    }

    #[test]
    fn a_flag_evaluation_serialises_as_a_frontend_api_toggle() {
        let e = engine(json!({"version": 2, "features": [
            {"name": "a", "enabled": true, "variants": [
                {"name": "blue", "weight": 1, "payload": {"type": "string", "value": "b"}}
            ]}
        ]}));
        let value = serde_json::to_value(e.evaluate("a", &Context::default()));
        assert_eq!(
            value.ok(),
            Some(
                json!({"name": "a", "enabled": true, "impressionData": false, "variant": {
                "name": "blue", "enabled": true, "feature_enabled": true, "featureEnabled": true,
                "payload": {"type": "string", "value": "b"}}})
            )
        );
    }

    #[test]
    fn a_duplicate_flag_name_keeps_the_last_definition() {
        let e = engine(json!({"version": 2, "features": [
            {"name": "a", "enabled": false},
            {"name": "a", "enabled": true}
        ]}));
        assert_eq!(e.len(), 1);
        assert!(e.is_enabled("a", &Context::default()));
    }

    #[test]
    fn in_rollout_agrees_with_flag_evaluation() {
        let params: BTreeMap<String, String> = [
            ("rollout", "37"),
            ("stickiness", "userId"),
            ("groupId", "g"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = engine(json!({"version": 2, "features": [
            {"name": "f", "enabled": true, "strategies": [{"name": "flexibleRollout", "parameters": params}]}
        ]}));
        for user in 0..500 {
            let ctx = Context::for_user(user.to_string());
            assert_eq!(
                in_rollout("f", &params, &ctx),
                e.is_enabled("f", &ctx),
                "user {user}"
            );
        }
        assert!(!in_rollout("f", &params, &Context::default()));
    }

    #[test]
    fn a_dependency_on_a_parent_with_parents_is_unsatisfiable() {
        let e = engine(json!({"version": 2, "features": [
            {"name": "root", "enabled": true},
            {"name": "mid", "enabled": true, "dependencies": [{"feature": "root"}]},
            {"name": "leaf", "enabled": true, "dependencies": [{"feature": "mid"}]},
            {"name": "self", "enabled": true, "dependencies": [{"feature": "self"}]}
        ]}));
        let ctx = Context::default();
        assert!(e.is_enabled("mid", &ctx));
        assert!(!e.is_enabled("leaf", &ctx));
        assert!(!e.is_enabled("self", &ctx));
    }
}
