//! Validation of admin input (strategies, constraints, variants), with JSON paths so
//! the API can point at the field. Import is deliberately not validated this strictly:
//! it must accept whatever an Unleash instance exported, including operators this
//! server does not know.

use super::model::{Constraint, Strategy, Variant};
use super::names::validate_url_friendly;

/// A problem at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// Operators whose single `value` must be given (the rest take `values`).
const SINGLE_VALUE_OPERATORS: &[&str] = &[
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
];

/// Checks a strategy as sent to the admin API.
pub fn validate_strategy(strategy: &Strategy) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = validate_url_friendly(&strategy.name) {
        problems.push(problem("name", e));
    }
    let percent_param = match strategy.name.as_str() {
        "flexibleRollout" => Some("rollout"),
        "gradualRolloutUserId" | "gradualRolloutSessionId" | "gradualRolloutRandom" => {
            Some("percentage")
        }
        _ => None,
    };
    if let Some(param) = percent_param {
        match strategy.parameters.get(param) {
            None if strategy.name == "flexibleRollout" => {
                problems.push(problem(format!("parameters.{param}"), "is required"))
            }
            None => {}
            // Fractions are allowed: a throttled fuse halves 25% to 12.5%.
            Some(v) => match v.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => {}
                _ => problems.push(problem(
                    format!("parameters.{param}"),
                    format!("must be a number from 0 to 100, got `{v}`"),
                )),
            },
        }
    }
    problems.extend(validate_constraints("constraints", &strategy.constraints));
    if let Some(variants) = &strategy.variants {
        problems.extend(check_variants("variants", variants));
    }
    problems
}

/// Checks constraints under `base` (e.g. `constraints`).
pub fn validate_constraints(base: &str, constraints: &[Constraint]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, c) in constraints.iter().enumerate() {
        let at = |field: &str| format!("{base}[{i}].{field}");
        if c.context_name.trim().is_empty() {
            problems.push(problem(at("contextName"), "must not be empty"));
        }
        if c.operator.is_empty()
            || !c
                .operator
                .chars()
                .all(|ch| ch.is_ascii_uppercase() || ch == '_')
        {
            problems.push(problem(
                at("operator"),
                format!(
                    "must be an operator such as IN or NUM_GT, got `{}`",
                    c.operator
                ),
            ));
        }
        if SINGLE_VALUE_OPERATORS.contains(&c.operator.as_str()) {
            if c.value.is_none() {
                problems.push(problem(
                    at("value"),
                    format!("is required for {}", c.operator),
                ));
            }
        } else if matches!(
            c.operator.as_str(),
            "IN" | "NOT_IN" | "IN_CIDR" | "STR_STARTS_WITH" | "STR_ENDS_WITH" | "STR_CONTAINS"
        ) && c.values.is_none()
            && c.value.is_none()
        {
            problems.push(problem(
                at("values"),
                format!("is required for {}", c.operator),
            ));
        }
    }
    problems
}

fn check_variants(base: &str, variants: &[Variant]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, v) in variants.iter().enumerate() {
        if v.name.trim().is_empty() {
            problems.push(problem(format!("{base}[{i}].name"), "must not be empty"));
        } else if !seen.insert(v.name.as_str()) {
            problems.push(problem(
                format!("{base}[{i}].name"),
                format!("duplicate variant name `{}`", v.name),
            ));
        }
        if v.weight > 1000 {
            problems.push(problem(
                format!("{base}[{i}].weight"),
                "must be at most 1000",
            ));
        }
        match v.weight_type.as_deref() {
            None | Some("variable") | Some("fix") => {}
            Some(other) => problems.push(problem(
                format!("{base}[{i}].weightType"),
                format!("must be `variable` or `fix`, got `{other}`"),
            )),
        }
        if let Some(payload) = &v.payload {
            if !matches!(
                payload.payload_type.as_str(),
                "string" | "json" | "csv" | "number"
            ) {
                problems.push(problem(
                    format!("{base}[{i}].payload.type"),
                    "must be one of string, json, csv, number",
                ));
            } else if payload.payload_type == "json"
                && serde_json::from_str::<serde_json::Value>(&payload.value).is_err()
            {
                problems.push(problem(
                    format!("{base}[{i}].payload.value"),
                    "is not valid JSON",
                ));
            } else if payload.payload_type == "number"
                && payload.value.trim().parse::<f64>().is_err()
            {
                problems.push(problem(
                    format!("{base}[{i}].payload.value"),
                    "is not a number",
                ));
            }
        }
    }
    problems
}

/// Validates feature variants and distributes weights as Unleash does: `fix`
/// variants keep theirs; the remainder of 1000 is split evenly over `variable` ones
/// (the first ones take the rounding remainder).
pub fn normalize_variants(variants: &[Variant]) -> Result<Vec<Variant>, Vec<Problem>> {
    let problems = check_variants("", variants);
    if !problems.is_empty() {
        return Err(problems);
    }
    if variants.is_empty() {
        return Ok(Vec::new());
    }
    let fixed: u32 = variants
        .iter()
        .filter(|v| v.weight_type.as_deref() == Some("fix"))
        .map(|v| v.weight)
        .sum();
    let variable = variants
        .iter()
        .filter(|v| v.weight_type.as_deref() != Some("fix"))
        .count() as u32;
    if fixed > 1000 || (variable == 0 && fixed != 1000) {
        return Err(vec![problem(
            "",
            format!("fixed weights must add up to at most 1000 (exactly 1000 when all are fixed), got {fixed}"),
        )]);
    }
    let mut out = variants.to_vec();
    if let Some(share) = (1000 - fixed).checked_div(variable) {
        let mut remainder = (1000 - fixed) % variable;
        for v in out
            .iter_mut()
            .filter(|v| v.weight_type.as_deref() != Some("fix"))
        {
            v.weight = share + u32::from(remainder > 0);
            remainder = remainder.saturating_sub(1);
            v.weight_type = Some("variable".into());
        }
    }
    for v in out.iter_mut() {
        if v.stickiness.is_none() {
            v.stickiness = Some("default".into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
                .collect::<BTreeMap<_, _>>(),
            constraints: vec![],
            segments: None,
            variants: None,
        }
    }

    fn variant(name: &str, weight: u32, fixed: bool) -> Variant {
        Variant {
            name: name.into(),
            weight,
            weight_type: Some(if fixed { "fix" } else { "variable" }.into()),
            stickiness: None,
            payload: None,
            overrides: None,
        }
    }

    #[test]
    fn a_flexible_rollout_needs_a_percentage_between_0_and_100() {
        assert!(validate_strategy(&strategy("flexibleRollout", &[("rollout", "25")])).is_empty());
        let p = validate_strategy(&strategy("flexibleRollout", &[("rollout", "101")]));
        assert_eq!(p[0].path, "parameters.rollout");
        let p = validate_strategy(&strategy("flexibleRollout", &[]));
        assert_eq!(p[0].path, "parameters.rollout");
    }

    #[test]
    fn constraint_problems_name_the_index_and_field() {
        let mut s = strategy("default", &[]);
        s.constraints = vec![
            Constraint {
                context_name: "userId".into(),
                operator: "IN".into(),
                values: Some(vec!["1".into()]),
                value: None,
                case_insensitive: None,
                inverted: None,
            },
            Constraint {
                context_name: "".into(),
                operator: "NUM_GT".into(),
                values: None,
                value: None,
                case_insensitive: None,
                inverted: None,
            },
        ];
        let paths: Vec<String> = validate_strategy(&s).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            vec!["constraints[1].contextName", "constraints[1].value"]
        );
    }

    #[test]
    fn variable_weights_share_what_fixed_weights_leave() {
        let out = normalize_variants(&[
            variant("a", 0, false),
            variant("b", 100, true),
            variant("c", 0, false),
            variant("d", 0, false),
        ])
        .unwrap();
        let weights: Vec<u32> = out.iter().map(|v| v.weight).collect();
        assert_eq!(weights, vec![300, 100, 300, 300]);
        let out = normalize_variants(&[
            variant("a", 0, false),
            variant("b", 0, false),
            variant("c", 0, false),
        ])
        .unwrap();
        assert_eq!(out.iter().map(|v| v.weight).sum::<u32>(), 1000);
    }

    #[test]
    fn fixed_weights_over_1000_or_duplicate_names_are_rejected() {
        assert!(normalize_variants(&[variant("a", 900, true), variant("b", 200, true)]).is_err());
        assert!(normalize_variants(&[variant("a", 0, false), variant("a", 0, false)]).is_err());
    }
}
