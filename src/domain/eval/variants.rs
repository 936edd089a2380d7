//! Variant selection and the `getVariant` result type.
//!
//! Selection follows Unleash: overrides first, then a weighted pick by
//! `murmur3("{groupId}:{stickinessId}", 86028157) % totalWeight + 1`. The stickiness of
//! feature variants is the first variant's; strategy variants use the strategy's
//! `stickiness` parameter. A missing stickiness value picks at random.

use rand::Rng;
use serde::de::Deserializer;
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::constraints::StrSet;
use super::context::{Context, ContextField};
use super::hash::{GroupHasher, VARIANT_SEED};
use super::strategies::Stickiness;
use crate::domain::model::{Payload, Variant};

/// Name of the variant returned when there is none.
pub const DISABLED_VARIANT: &str = "disabled";

/// The result of `getVariant`, as Unleash SDKs and the frontend API return it.
///
/// Serialises as `{name, payload?, enabled, feature_enabled, featureEnabled}`: the
/// client spec uses the snake-case key, the frontend API sends both.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantResult {
    pub name: String,
    /// Whether a real variant was chosen (false for `"disabled"`).
    pub enabled: bool,
    /// Whether the flag itself is on for this context.
    pub feature_enabled: bool,
    pub payload: Option<Payload>,
}

impl VariantResult {
    /// The `"disabled"` variant.
    pub fn disabled(feature_enabled: bool) -> Self {
        Self {
            name: DISABLED_VARIANT.to_owned(),
            enabled: false,
            feature_enabled,
            payload: None,
        }
    }

    pub(crate) fn chosen(variant: &CompiledVariant) -> Self {
        Self {
            name: String::from(&*variant.name),
            enabled: true,
            feature_enabled: true,
            payload: variant.payload.clone(),
        }
    }
}

impl Serialize for VariantResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = if self.payload.is_some() { 5 } else { 4 };
        let mut s = serializer.serialize_struct("VariantResult", fields)?;
        s.serialize_field("name", &self.name)?;
        if let Some(payload) = &self.payload {
            s.serialize_field("payload", payload)?;
        }
        s.serialize_field("enabled", &self.enabled)?;
        s.serialize_field("feature_enabled", &self.feature_enabled)?;
        s.serialize_field("featureEnabled", &self.feature_enabled)?;
        s.end()
    }
}

/// Accepts either spelling of the flag state (or both), as SDK fixtures vary.
impl<'de> Deserialize<'de> for VariantResult {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            name: String,
            enabled: bool,
            feature_enabled: Option<bool>,
            #[serde(rename = "featureEnabled")]
            feature_enabled_camel: Option<bool>,
            #[serde(default)]
            payload: Option<Payload>,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(Self {
            name: wire.name,
            enabled: wire.enabled,
            feature_enabled: wire
                .feature_enabled
                .or(wire.feature_enabled_camel)
                .unwrap_or(false),
            payload: wire.payload,
        })
    }
}

/// A non-empty list of variants with everything selection needs precomputed.
#[derive(Debug, Clone)]
pub(crate) struct CompiledVariants {
    variants: Box<[CompiledVariant]>,
    /// Sum of weights, in u64 so hostile weights cannot overflow.
    total_weight: u64,
    stickiness: Stickiness,
    hasher: GroupHasher,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledVariant {
    pub(crate) name: Box<str>,
    weight: u32,
    payload: Option<Payload>,
    overrides: Box<[(ContextField, StrSet)]>,
}

impl CompiledVariants {
    /// `None` for an empty list, so callers fall back to the next variant source.
    pub(crate) fn compile(
        variants: &[Variant],
        stickiness: Stickiness,
        group_id: &str,
    ) -> Option<Self> {
        if variants.is_empty() {
            return None;
        }
        let compiled: Box<[CompiledVariant]> = variants
            .iter()
            .map(|v| CompiledVariant {
                name: v.name.as_str().into(),
                weight: v.weight,
                payload: v.payload.clone(),
                overrides: v
                    .overrides
                    .iter()
                    .flatten()
                    .map(|o| {
                        let values = StrSet::new(o.values.iter().map(String::as_str));
                        (ContextField::parse(&o.context_name), values)
                    })
                    .collect(),
            })
            .collect();
        Some(Self {
            total_weight: compiled.iter().map(|v| u64::from(v.weight)).sum(),
            variants: compiled,
            stickiness,
            hasher: GroupHasher::new(group_id, VARIANT_SEED),
        })
    }

    /// Feature-level variants: stickiness from the first variant, group = feature name.
    pub(crate) fn for_feature(variants: &[Variant], feature_name: &str) -> Option<Self> {
        let stickiness = variants
            .first()
            .and_then(|v| v.stickiness.as_deref())
            .filter(|s| !s.is_empty());
        Self::compile(variants, Stickiness::parse(stickiness), feature_name)
    }

    /// The variant for `ctx`, or `None` when all weights are zero.
    pub(crate) fn select(&self, ctx: &Context) -> Option<&CompiledVariant> {
        if self.total_weight == 0 {
            return None;
        }
        if let Some(forced) = self.variants.iter().find(|v| v.is_overridden(ctx)) {
            return Some(forced);
        }
        let id = match &self.stickiness {
            Stickiness::Default => ctx.default_stickiness_id(),
            Stickiness::Random => None,
            Stickiness::Field(field) => field.resolve(ctx),
        };
        let target = match id {
            Some(id) => u64::from(self.hasher.hash(id)) % self.total_weight + 1,
            None => rand::rng().random_range(1..=self.total_weight),
        };
        let mut acc = 0u64;
        self.variants.iter().filter(|v| v.weight > 0).find(|v| {
            acc += u64::from(v.weight);
            acc >= target
        })
    }
}

impl CompiledVariant {
    #[inline]
    fn is_overridden(&self, ctx: &Context) -> bool {
        self.overrides
            .iter()
            .any(|(field, values)| field.resolve(ctx).is_some_and(|v| values.contains(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Override;

    fn variant(name: &str, weight: u32) -> Variant {
        Variant {
            name: name.into(),
            weight,
            weight_type: None,
            stickiness: None,
            payload: None,
            overrides: None,
        }
    }

    #[test]
    fn serialises_both_spellings_of_feature_enabled_and_omits_a_missing_payload() {
        let json = serde_json::to_string(&VariantResult::disabled(true)).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"name":"disabled","enabled":false,"feature_enabled":true,"featureEnabled":true}"#
        );
    }

    #[test]
    fn deserialises_either_spelling_of_feature_enabled() {
        for json in [
            r#"{"name":"a","enabled":true,"feature_enabled":true}"#,
            r#"{"name":"a","enabled":true,"featureEnabled":true}"#,
        ] {
            let v: VariantResult =
                serde_json::from_str(json).unwrap_or_else(|_| VariantResult::disabled(false));
            assert!(v.feature_enabled, "{json}");
        }
    }

    #[test]
    fn zero_weight_variants_are_never_chosen() {
        let vs = CompiledVariants::for_feature(&[variant("zero", 0), variant("one", 1)], "f");
        for user in 0..200 {
            let chosen = vs
                .as_ref()
                .and_then(|v| v.select(&Context::for_user(user.to_string())));
            assert_eq!(chosen.map(|v| &*v.name), Some("one"));
        }
    }

    #[test]
    fn all_zero_weights_choose_nothing_even_with_a_matching_override() {
        let mut v = variant("zero", 0);
        v.overrides = Some(vec![Override {
            context_name: "userId".into(),
            values: vec!["1".into()],
        }]);
        let vs = CompiledVariants::for_feature(&[v], "f");
        assert!(vs
            .and_then(|v| v.select(&Context::for_user("1")).map(|_| ()))
            .is_none());
    }

    #[test]
    fn weights_summing_past_u32_max_do_not_overflow() {
        let vs =
            CompiledVariants::for_feature(&[variant("a", u32::MAX), variant("b", u32::MAX)], "f");
        assert!(vs
            .as_ref()
            .and_then(|v| v.select(&Context::default()))
            .is_some());
        assert!(vs
            .as_ref()
            .and_then(|v| v.select(&Context::for_user("1")))
            .is_some());
    }

    #[test]
    fn a_missing_custom_stickiness_field_picks_at_random_instead_of_failing() {
        let mut a = variant("a", 1);
        a.stickiness = Some("tenant".into());
        let vs = CompiledVariants::for_feature(&[a], "f");
        assert!(vs
            .and_then(|v| v.select(&Context::default()).map(|_| ()))
            .is_some());
    }
}
