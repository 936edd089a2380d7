//! One feature, one strategy carrying fuzzed constraints (Unleash operators plus
//! garbage, inverted / caseInsensitive, values shaped like numbers, dates, semvers,
//! IPs or anything), evaluated against a fuzzed context.
//!
//! Checked besides "never panics":
//! - `is_enabled`, `get_variant` and `evaluate` agree (the strategy is deterministic);
//! - a constraint and its inverse are never both true on their own (an unusable
//!   constraint is false both ways, a usable one exactly one way);
//! - evaluation is deterministic.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use fusebox::domain::eval::{Context, Engine};
use fusebox::domain::model::{ClientFeature, ClientFeatures, Constraint, Strategy, Variant};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Operator {
    In,
    NotIn,
    StrContains,
    StrStartsWith,
    StrEndsWith,
    NumEq,
    NumGt,
    NumGte,
    NumLt,
    NumLte,
    DateAfter,
    DateBefore,
    SemverEq,
    SemverGt,
    SemverGte,
    SemverLt,
    SemverLte,
    Regex,
    InCidr,
    Garbage(String),
}

impl Operator {
    fn wire(&self) -> String {
        match self {
            Operator::In => "IN",
            Operator::NotIn => "NOT_IN",
            Operator::StrContains => "STR_CONTAINS",
            Operator::StrStartsWith => "STR_STARTS_WITH",
            Operator::StrEndsWith => "STR_ENDS_WITH",
            Operator::NumEq => "NUM_EQ",
            Operator::NumGt => "NUM_GT",
            Operator::NumGte => "NUM_GTE",
            Operator::NumLt => "NUM_LT",
            Operator::NumLte => "NUM_LTE",
            Operator::DateAfter => "DATE_AFTER",
            Operator::DateBefore => "DATE_BEFORE",
            Operator::SemverEq => "SEMVER_EQ",
            Operator::SemverGt => "SEMVER_GT",
            Operator::SemverGte => "SEMVER_GTE",
            Operator::SemverLt => "SEMVER_LT",
            Operator::SemverLte => "SEMVER_LTE",
            Operator::Regex => "REGEX",
            Operator::InCidr => "IN_CIDR",
            Operator::Garbage(s) => return s.clone(),
        }
        .to_string()
    }
}

#[derive(Debug, Arbitrary)]
enum Field {
    UserId,
    SessionId,
    RemoteAddress,
    CurrentTime,
    Environment,
    AppName,
    Property(String),
}

impl Field {
    fn wire(&self) -> String {
        match self {
            Field::UserId => "userId",
            Field::SessionId => "sessionId",
            Field::RemoteAddress => "remoteAddress",
            Field::CurrentTime => "currentTime",
            Field::Environment => "environment",
            Field::AppName => "appName",
            Field::Property(name) => return name.clone(),
        }
        .to_string()
    }
}

/// A value biased towards what the operators parse, so the fuzzer reaches comparisons
/// without having to discover the syntax byte by byte.
#[derive(Debug, Arbitrary)]
enum Value {
    Raw(String),
    Int(i64),
    Float(f64),
    /// Epoch seconds, written as RFC 3339 (possibly with an offset or fraction).
    Date(i64, i8, bool),
    BareDate(u16, u8, u8),
    Semver(u64, u64, u64, Option<String>, Option<String>),
    Ip([u8; 4], Option<u8>),
    Ip6([u16; 8], Option<u8>),
    /// A raw string padded with spaces, or with its case changed.
    Padded(String),
    Upper(String),
}

impl Value {
    fn wire(&self) -> String {
        match self {
            Value::Raw(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Float(n) => n.to_string(),
            Value::Date(secs, offset_h, frac) => {
                let base = chrono::DateTime::from_timestamp(*secs, 0)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
                    .unwrap_or_else(|| secs.to_string());
                let frac = if *frac { ".123" } else { "" };
                match offset_h {
                    0 => format!("{base}{frac}Z"),
                    h if h.unsigned_abs() <= 14 => format!("{base}{frac}{h:+03}:00"),
                    _ => format!("{base}{frac}"),
                }
            }
            Value::BareDate(y, m, d) => format!("{y:04}-{m:02}-{d:02}"),
            Value::Semver(a, b, c, pre, build) => {
                let mut s = format!("{a}.{b}.{c}");
                if let Some(pre) = pre {
                    s.push('-');
                    s.push_str(pre);
                }
                if let Some(build) = build {
                    s.push('+');
                    s.push_str(build);
                }
                s
            }
            Value::Ip(o, prefix) => {
                let ip = format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]);
                prefix.map_or(ip.clone(), |p| format!("{ip}/{p}"))
            }
            Value::Ip6(s, prefix) => {
                let ip = std::net::Ipv6Addr::from(*s).to_string();
                prefix.map_or(ip.clone(), |p| format!("{ip}/{p}"))
            }
            Value::Padded(s) => format!("  {s} "),
            Value::Upper(s) => s.to_uppercase(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct FuzzConstraint {
    field: Field,
    operator: Operator,
    values: Option<Vec<Value>>,
    value: Option<Value>,
    case_insensitive: Option<bool>,
    inverted: Option<bool>,
}

impl FuzzConstraint {
    fn wire(&self) -> Constraint {
        Constraint {
            context_name: self.field.wire(),
            operator: self.operator.wire(),
            values: self
                .values
                .as_ref()
                .map(|vs| vs.iter().map(Value::wire).collect()),
            value: self.value.as_ref().map(Value::wire),
            case_insensitive: self.case_insensitive,
            inverted: self.inverted,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct FuzzContext {
    user_id: Option<Value>,
    session_id: Option<Value>,
    remote_address: Option<Value>,
    environment: Option<Value>,
    app_name: Option<Value>,
    current_time: Option<Value>,
    properties: Vec<(Field, Value)>,
}

impl FuzzContext {
    fn build(&self) -> Context {
        let wire = |v: &Option<Value>| v.as_ref().map(Value::wire);
        let mut ctx = Context {
            user_id: wire(&self.user_id),
            session_id: wire(&self.session_id),
            remote_address: wire(&self.remote_address),
            environment: wire(&self.environment),
            app_name: wire(&self.app_name),
            current_time: wire(&self.current_time),
            properties: BTreeMap::new(),
        };
        for (name, value) in &self.properties {
            ctx.properties.insert(name.wire(), value.wire());
        }
        ctx
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    constraints: Vec<FuzzConstraint>,
    /// Strategy variants with these weights; none means the feature has no variants.
    variant_weights: Vec<u16>,
    context: FuzzContext,
}

fn document(constraints: Vec<Constraint>, variants: Option<Vec<Variant>>) -> ClientFeatures {
    let strategy = Strategy {
        id: None,
        name: "default".into(),
        title: None,
        disabled: None,
        sort_order: None,
        // userId stickiness keeps variant choice deterministic when a userId is given.
        parameters: [("stickiness".to_string(), "userId".to_string())].into(),
        constraints,
        segments: None,
        variants,
    };
    ClientFeatures {
        version: 2,
        features: vec![ClientFeature {
            name: "f".into(),
            feature_type: None,
            description: None,
            project: None,
            enabled: true,
            stale: None,
            impression_data: None,
            strategies: vec![strategy],
            variants: None,
            dependencies: None,
        }],
        segments: None,
    }
}

fuzz_target!(|input: Input| {
    let ctx = input.context.build();
    let constraints: Vec<Constraint> = input
        .constraints
        .iter()
        .take(8)
        .map(FuzzConstraint::wire)
        .collect();
    let variants: Option<Vec<Variant>> = (!input.variant_weights.is_empty()).then(|| {
        input
            .variant_weights
            .iter()
            .take(8)
            .enumerate()
            .map(|(i, w)| Variant {
                name: format!("v{i}"),
                weight: u32::from(*w),
                weight_type: None,
                stickiness: None,
                payload: None,
                overrides: None,
            })
            .collect()
    });

    let engine = Engine::new(&document(constraints.clone(), variants));
    let enabled = engine.is_enabled("f", &ctx);
    assert_eq!(
        enabled,
        engine.is_enabled("f", &ctx),
        "is_enabled is not deterministic"
    );
    let variant = engine.get_variant("f", &ctx);
    assert_eq!(
        variant.feature_enabled, enabled,
        "get_variant disagrees with is_enabled"
    );
    if !enabled {
        assert!(!variant.enabled);
    }
    if ctx.user_id.as_deref().is_some_and(|u| !u.is_empty()) {
        assert_eq!(
            engine.get_variant("f", &ctx),
            variant,
            "sticky variant changed"
        );
    }
    let evaluation = engine.evaluate("f", &ctx);
    assert_eq!(evaluation.map(|e| e.enabled), Some(enabled));

    // Each constraint alone and inverted: never both true.
    for c in &constraints {
        let mut flipped = c.clone();
        flipped.inverted = Some(!c.inverted.unwrap_or(false));
        let plain = Engine::new(&document(vec![c.clone()], None)).is_enabled("f", &ctx);
        let inverse = Engine::new(&document(vec![flipped], None)).is_enabled("f", &ctx);
        assert!(
            !(plain && inverse),
            "{c:?} and its inverse both hold for {ctx:?}"
        );
        if !plain {
            // All constraints are AND-ed: one false constraint turns the strategy off.
            assert!(!enabled, "{c:?} is false alone but the strategy is on");
        }
    }
});
