//! Strategies and constraints in words, so a product manager can read targeting
//! without knowing Unleash's parameter names.

use crate::domain::model::{Constraint, Strategy};

/// One sentence per strategy, e.g. "25% of users (sticky on userId) where country is
/// one of NO, SE".
pub fn strategy(s: &Strategy) -> String {
    let p = |k: &str| s.parameters.get(k).map(String::as_str).unwrap_or("");
    let who = match (s.name.as_str(), gradual_rollout(s)) {
        ("default", _) => "Everyone".to_string(),
        (_, Some(pct)) => {
            let pct = if pct.is_empty() { "0" } else { pct };
            let stickiness = match s.name.as_str() {
                "gradualRolloutSessionId" => "sessionId",
                "gradualRolloutRandom" => "random",
                "gradualRolloutUserId" => "userId",
                _ => match p("stickiness") {
                    "" | "default" => "userId, else sessionId",
                    other => other,
                },
            };
            format!("{pct}% of users (sticky on {stickiness})")
        }
        ("userWithId", _) => format!("Users {}", list(p("userIds"))),
        ("remoteAddress", _) => format!("Requests from {}", list(p("IPs"))),
        ("applicationHostname", _) => format!("Hosts {}", list(p("hostNames"))),
        (other, None) => format!("Custom strategy `{other}`"),
    };
    let mut parts = vec![who];
    if s.constraints.is_empty() && s.segments.as_ref().is_none_or(Vec::is_empty) {
        // nothing more
    } else {
        let mut conditions: Vec<String> = s.constraints.iter().map(constraint).collect();
        if let Some(segments) = &s.segments {
            conditions.extend(segments.iter().map(|id| format!("in segment #{id}")));
        }
        parts.push(format!("where {}", conditions.join(" and ")));
    }
    if let Some(variants) = s.variants.as_ref().filter(|v| !v.is_empty()) {
        let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
        parts.push(format!("with variants {}", names.join(", ")));
    }
    if s.disabled == Some(true) {
        parts.push("(disabled)".into());
    }
    parts.join(" ")
}

/// A gradual rollout's percentage parameter (`rollout`, or `percentage` in the legacy
/// strategies); `None` for strategies that are not gradual rollouts.
pub fn gradual_rollout(s: &Strategy) -> Option<&str> {
    match s.name.as_str() {
        "flexibleRollout"
        | "gradualRolloutUserId"
        | "gradualRolloutSessionId"
        | "gradualRolloutRandom" => Some(
            ["rollout", "percentage"]
                .iter()
                .find_map(|k| s.parameters.get(*k).filter(|v| !v.is_empty()))
                .map_or("", String::as_str),
        ),
        _ => None,
    }
}

fn list(csv: &str) -> String {
    let items: Vec<&str> = csv
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if items.is_empty() {
        "(none listed)".into()
    } else {
        items.join(", ")
    }
}

/// "country is one of NO, SE", "appVersion is not semver-greater than 2.0.0".
pub fn constraint(c: &Constraint) -> String {
    let inverted = c.inverted == Some(true);
    let values = match (&c.values, &c.value) {
        (Some(v), _) if !v.is_empty() => v.join(", "),
        (_, Some(v)) => v.clone(),
        _ => String::new(),
    };
    let (verb, negated) = match c.operator.as_str() {
        "IN" => ("is one of", "is not one of"),
        "NOT_IN" => ("is not one of", "is one of"),
        "STR_CONTAINS" => ("contains", "does not contain"),
        "STR_STARTS_WITH" => ("starts with", "does not start with"),
        "STR_ENDS_WITH" => ("ends with", "does not end with"),
        "NUM_EQ" => ("equals", "does not equal"),
        "NUM_GT" => ("is greater than", "is not greater than"),
        "NUM_GTE" => ("is at least", "is less than"),
        "NUM_LT" => ("is less than", "is at least"),
        "NUM_LTE" => ("is at most", "is greater than"),
        "DATE_AFTER" => ("is after", "is not after"),
        "DATE_BEFORE" => ("is before", "is not before"),
        "SEMVER_EQ" => ("is version", "is not version"),
        "SEMVER_GT" => ("is a version after", "is not a version after"),
        "SEMVER_LT" => ("is a version before", "is not a version before"),
        other => {
            return format!(
                "{} {}{} {values}",
                c.context_name,
                if inverted { "not " } else { "" },
                other
            )
        }
    };
    let case = if c.case_insensitive == Some(true) {
        " (ignoring case)"
    } else {
        ""
    };
    format!(
        "{} {} {values}{case}",
        c.context_name,
        if inverted { negated } else { verb }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strat(json: serde_json::Value) -> Strategy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rollouts_and_constraints_read_as_sentences() {
        let s = strat(serde_json::json!({
            "name": "flexibleRollout",
            "parameters": {"rollout": "25", "stickiness": "default", "groupId": "x"},
            "constraints": [
                {"contextName": "country", "operator": "IN", "values": ["NO", "SE"]},
                {"contextName": "appVersion", "operator": "SEMVER_GT", "value": "2.0.0", "inverted": true}
            ],
            "segments": [3]
        }));
        assert_eq!(
            strategy(&s),
            "25% of users (sticky on userId, else sessionId) where country is one of NO, SE \
             and appVersion is not a version after 2.0.0 and in segment #3"
        );
    }

    #[test]
    fn other_strategies() {
        assert_eq!(
            strategy(&strat(serde_json::json!({"name": "default"}))),
            "Everyone"
        );
        assert_eq!(
            strategy(&strat(
                serde_json::json!({"name": "userWithId", "parameters": {"userIds": "a, b"}})
            )),
            "Users a, b"
        );
        let c: Constraint = serde_json::from_value(serde_json::json!(
            {"contextName": "email", "operator": "STR_ENDS_WITH", "values": ["@x.io"], "caseInsensitive": true}
        ))
        .unwrap();
        assert_eq!(constraint(&c), "email ends with @x.io (ignoring case)");
    }
}
