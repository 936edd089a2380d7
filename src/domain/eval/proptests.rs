//! Property tests: no input can make evaluation panic, and rollouts hit their share.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

use super::{in_rollout, Context, Engine};
use crate::domain::model::{
    ClientFeature, ClientFeatures, Constraint, Dependency, Override, Payload, Segment,
    Strategy as WireStrategy, Variant,
};

const FLAG_NAMES: [&str; 4] = ["a", "b", "c", "ø-flag"];

/// Values that exercise every parser (and some that break them).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("12".to_owned()),
        Just("-3.5e2".to_owned()),
        Just("NaN".to_owned()),
        Just("1.2.3-beta.1+build".to_owned()),
        Just("v1.0.0".to_owned()),
        Just("2022-01-22T13:00:00.000+02:00".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("2001:db8::/129".to_owned()),
        Just("::ffff:10.1.2.3".to_owned()),
        Just("(?i)^a.*$".to_owned()),
        Just("(unclosed".to_owned()),
        Just("a{99999}{99999}".to_owned()),
        "[a-zA-Z0-9 ,./:-]{0,12}",
        any::<String>(),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("userId".to_owned()),
        Just("sessionId".to_owned()),
        Just("remoteAddress".to_owned()),
        Just("environment".to_owned()),
        Just("appName".to_owned()),
        Just("currentTime".to_owned()),
        Just("hostname".to_owned()),
        Just("version".to_owned()),
        any::<String>(),
    ]
}

fn operator() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "IN",
            "NOT_IN",
            "STR_STARTS_WITH",
            "STR_ENDS_WITH",
            "STR_CONTAINS",
            "NUM_EQ",
            "NUM_GT",
            "NUM_GTE",
            "NUM_LT",
            "NUM_LTE",
            "DATE_AFTER",
            "DATE_BEFORE",
            "SEMVER_EQ",
            "SEMVER_GT",
            "SEMVER_GTE",
            "SEMVER_LT",
            "SEMVER_LTE",
            "REGEX",
            "IN_CIDR",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

fn constraint() -> impl Strategy<Value = Constraint> {
    (
        field(),
        operator(),
        option::of(vec(value(), 0..4)),
        option::of(value()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
    )
        .prop_map(
            |(context_name, operator, values, value, case_insensitive, inverted)| Constraint {
                context_name,
                operator,
                values,
                value,
                case_insensitive,
                inverted,
            },
        )
}

fn variant() -> impl Strategy<Value = Variant> {
    (
        "[a-z]{0,4}",
        prop_oneof![0u32..5, 0u32..1000, Just(u32::MAX)],
        option::of(prop_oneof![
            Just("default".to_owned()),
            Just("random".to_owned()),
            field()
        ]),
        option::of(value().prop_map(|value| Payload {
            payload_type: "string".into(),
            value,
        })),
        option::of(vec(
            (field(), vec(value(), 0..3)).prop_map(|(context_name, values)| Override {
                context_name,
                values,
            }),
            0..2,
        )),
    )
        .prop_map(|(name, weight, stickiness, payload, overrides)| Variant {
            name,
            weight,
            weight_type: None,
            stickiness,
            payload,
            overrides,
        })
}

fn parameters() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(
        prop::sample::select(vec![
            "rollout",
            "stickiness",
            "groupId",
            "percentage",
            "userIds",
            "IPs",
            "hostNames",
        ])
        .prop_map(str::to_owned),
        value(),
        0..5,
    )
}

fn strategy() -> impl Strategy<Value = WireStrategy> {
    (
        prop_oneof![
            prop::sample::select(vec![
                "default",
                "userWithId",
                "flexibleRollout",
                "gradualRolloutUserId",
                "gradualRolloutSessionId",
                "gradualRolloutRandom",
                "remoteAddress",
                "applicationHostname",
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ],
        parameters(),
        vec(constraint(), 0..4),
        option::of(vec(0i64..4, 0..3)),
        option::of(vec(variant(), 0..3)),
        option::of(any::<bool>()),
        option::of(-2i64..3),
    )
        .prop_map(
            |(name, parameters, constraints, segments, variants, disabled, sort_order)| {
                WireStrategy {
                    id: None,
                    name,
                    title: None,
                    disabled,
                    sort_order,
                    parameters,
                    constraints,
                    segments,
                    variants,
                }
            },
        )
}

fn feature() -> impl Strategy<Value = ClientFeature> {
    (
        prop::sample::select(FLAG_NAMES.to_vec()),
        any::<bool>(),
        vec(strategy(), 0..3),
        option::of(vec(variant(), 0..4)),
        option::of(vec(
            (
                prop::sample::select(FLAG_NAMES.to_vec()),
                option::of(any::<bool>()),
                option::of(vec("[a-z]{0,4}", 0..3)),
            )
                .prop_map(|(feature, enabled, variants)| Dependency {
                    feature: feature.to_owned(),
                    enabled,
                    variants,
                }),
            0..3,
        )),
    )
        .prop_map(
            |(name, enabled, strategies, variants, dependencies)| ClientFeature {
                name: name.to_owned(),
                feature_type: None,
                description: None,
                project: None,
                enabled,
                stale: None,
                impression_data: None,
                strategies,
                variants,
                dependencies,
            },
        )
}

fn features() -> impl Strategy<Value = ClientFeatures> {
    (
        vec(feature(), 0..5),
        option::of(vec(
            (0i64..4, vec(constraint(), 0..3)).prop_map(|(id, constraints)| Segment {
                id,
                name: None,
                constraints,
            }),
            0..3,
        )),
    )
        .prop_map(|(features, segments)| ClientFeatures {
            version: 2,
            features,
            segments,
        })
}

fn context() -> impl Strategy<Value = Context> {
    (
        option::of(value()),
        option::of(value()),
        option::of(value()),
        option::of(value()),
        option::of(value()),
        option::of(value()),
        btree_map(field(), value(), 0..4),
    )
        .prop_map(
            |(
                user_id,
                session_id,
                remote_address,
                environment,
                app_name,
                current_time,
                properties,
            )| {
                Context {
                    user_id,
                    session_id,
                    remote_address,
                    environment,
                    app_name,
                    current_time,
                    properties,
                }
            },
        )
}

/// Deterministic, well-mixed user ids (splitmix64), so each case is reproducible.
fn user_ids(seed: u64, count: usize) -> impl Iterator<Item = String> {
    let mut state = seed;
    (0..count).map(move |_| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        format!("{:x}", z ^ (z >> 31))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_never_panics_on_arbitrary_flags_and_contexts(doc in features(), ctx in context()) {
        let engine = Engine::new(&doc);
        for name in FLAG_NAMES.iter().copied().chain(["unknown"]) {
            let enabled = engine.is_enabled(name, &ctx);
            let variant = engine.get_variant(name, &ctx);
            prop_assert!(!variant.enabled || variant.feature_enabled);
            if let Some(eval) = engine.evaluate(name, &ctx) {
                prop_assert_eq!(eval.variant.enabled, eval.variant.name != super::DISABLED_VARIANT);
            }
            let _ = enabled;
        }
        prop_assert_eq!(engine.evaluate_all(&ctx).count(), engine.len());
    }

    #[test]
    fn arbitrary_json_never_panics_the_context_parser(json in "\\PC{0,64}") {
        let _ = serde_json::from_str::<Context>(&json);
    }

    #[test]
    fn in_rollout_never_panics_on_arbitrary_parameters(params in parameters(), ctx in context()) {
        let _ = in_rollout("f", &params, &ctx);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn a_flexible_rollout_enables_its_share_of_100k_users_within_one_point(
        rollout in prop::sample::select(vec![1u32, 5, 10, 25, 33, 50, 75, 90, 99]),
        seed in any::<u64>(),
        group in "[a-z.]{1,12}",
    ) {
        let doc = ClientFeatures {
            version: 2,
            features: vec![ClientFeature {
                name: "f".into(),
                feature_type: None,
                description: None,
                project: None,
                enabled: true,
                stale: None,
                impression_data: None,
                strategies: vec![WireStrategy {
                    id: None,
                    name: "flexibleRollout".into(),
                    title: None,
                    disabled: None,
                    sort_order: None,
                    parameters: [
                        ("rollout".to_owned(), rollout.to_string()),
                        ("stickiness".to_owned(), "default".to_owned()),
                        ("groupId".to_owned(), group),
                    ]
                    .into_iter()
                    .collect(),
                    constraints: vec![],
                    segments: None,
                    variants: None,
                }],
                variants: None,
                dependencies: None,
            }],
            segments: None,
        };
        let engine = Engine::new(&doc);
        const USERS: usize = 100_000;
        let mut ctx = Context::default();
        let mut on = 0usize;
        for id in user_ids(seed, USERS) {
            ctx.user_id = Some(id);
            on += usize::from(engine.is_enabled("f", &ctx));
        }
        let share = on as f64 * 100.0 / USERS as f64;
        prop_assert!((share - f64::from(rollout)).abs() <= 1.0, "rollout {rollout}%: {share:.3}% enabled");
    }
}
