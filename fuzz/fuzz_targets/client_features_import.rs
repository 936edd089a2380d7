//! Arbitrary bytes as an Unleash client-features document (the format of
//! `GET /api/client/features` and `POST /api/admin/state/import`) and as a
//! `/api/client/delta` body; whatever parses is compiled by `Engine::new` and evaluated.
//!
//! Checked besides "never panics":
//! - the import checks the handler makes (names, duplicates, projects), the admin
//!   validators and `normalize_variants` (whose output weights add up to 1000);
//! - export is import's inverse: serialising and re-parsing gives the same document;
//! - `is_enabled`, `get_variant` and `evaluate` agree for every flag and context;
//! - the delta fold gives a document the engine compiles, like a plain one.
#![no_main]

use fusebox::domain::delta::{apply_events, apply_events_to, ClientFeaturesDelta};
use fusebox::domain::eval::{Context, Engine};
use fusebox::domain::model::{ClientFeatures, Constraint};
use fusebox::domain::names::{validate_printable, validate_url_friendly};
use fusebox::domain::validate::{normalize_variants, validate_constraints, validate_strategy};
use libfuzzer_sys::fuzz_target;

/// At most this many contexts built from constraint values, so a big document cannot
/// make one run quadratic.
const MAX_PROBES: usize = 16;

/// What `import_state` checks before it writes (src/api/admin/state.rs), minus I/O.
fn import_checks(doc: &ClientFeatures) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, f) in doc.features.iter().enumerate() {
        validate_printable(&f.name).map_err(|e| format!("features[{i}].name: {e}"))?;
        if !seen.insert(f.name.as_str()) {
            return Err(format!("features[{i}].name: duplicate feature name"));
        }
        if let Some(p) = &f.project {
            validate_url_friendly(p).map_err(|e| format!("features[{i}].project: {e}"))?;
        }
    }
    Ok(())
}

fn admin_checks(doc: &ClientFeatures) {
    for f in &doc.features {
        for s in &f.strategies {
            for p in validate_strategy(s) {
                assert!(!p.message.is_empty());
            }
            if let Some(variants) = &s.variants {
                check_normalized(variants);
            }
        }
        if let Some(variants) = &f.variants {
            check_normalized(variants);
        }
    }
    for s in doc.segments.iter().flatten() {
        let _ = validate_constraints("constraints", &s.constraints);
    }
}

fn check_normalized(variants: &[fusebox::domain::model::Variant]) {
    if let Ok(out) = normalize_variants(variants) {
        assert_eq!(out.len(), variants.len());
        if !out.is_empty() {
            let total: u64 = out.iter().map(|v| u64::from(v.weight)).sum();
            assert_eq!(total, 1000, "normalised weights must add up to 1000");
        }
    }
}

fn all_constraints(doc: &ClientFeatures) -> impl Iterator<Item = &Constraint> {
    let strategies = doc
        .features
        .iter()
        .flat_map(|f| f.strategies.iter())
        .flat_map(|s| s.constraints.iter());
    let segments = doc
        .segments
        .iter()
        .flatten()
        .flat_map(|s| s.constraints.iter());
    strategies.chain(segments)
}

/// Fixed contexts plus, for a few constraints, one whose field holds the first value.
fn contexts(doc: &ClientFeatures) -> Vec<Context> {
    let mut out = vec![
        Context::default(),
        Context::for_user("1"),
        Context {
            user_id: Some("123".into()),
            session_id: Some("s-1".into()),
            remote_address: Some("::ffff:192.168.0.1".into()),
            environment: Some("production".into()),
            app_name: Some("web".into()),
            current_time: Some("2024-05-01T12:00:00Z".into()),
            ..Context::default()
        }
        .with_property("hostname", "localhost"),
    ];
    for c in all_constraints(doc).take(MAX_PROBES) {
        let value = c
            .value
            .clone()
            .or_else(|| c.values.as_ref().and_then(|v| v.first().cloned()))
            .unwrap_or_default();
        let mut ctx = Context::default().with_property(c.context_name.clone(), value.clone());
        match c.context_name.as_str() {
            "userId" => ctx.user_id = Some(value),
            "sessionId" => ctx.session_id = Some(value),
            "remoteAddress" => ctx.remote_address = Some(value),
            "environment" => ctx.environment = Some(value),
            "appName" => ctx.app_name = Some(value),
            "currentTime" => ctx.current_time = Some(value),
            _ => {}
        }
        out.push(ctx);
    }
    out
}

fn exercise(doc: &ClientFeatures) {
    let engine = Engine::new(doc);
    assert!(engine.len() <= doc.features.len());
    for f in &doc.features {
        assert!(engine.contains(&f.name));
    }
    let names: Vec<String> = engine.names().map(str::to_owned).collect();
    for ctx in contexts(doc) {
        assert_eq!(engine.evaluate_all(&ctx).count(), engine.len());
        for name in &names {
            // Random stickiness and gradualRolloutRandom make single answers random,
            // so only properties that hold for every draw are checked.
            let variant = engine.get_variant(name, &ctx);
            if !variant.feature_enabled {
                assert!(!variant.enabled, "a variant for a disabled flag");
            }
            let _ = engine.is_enabled(name, &ctx);
            let evaluated = engine.evaluate(name, &ctx);
            assert!(evaluated.is_some_and(|e| e.name == name.as_str()));
        }
        assert!(!engine.is_enabled("\u{0}no such flag", &ctx));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<ClientFeatures>(data) {
        let _ = import_checks(&doc);
        admin_checks(&doc);
        if let Ok(text) = serde_json::to_vec(&doc) {
            let again: Result<ClientFeatures, _> = serde_json::from_slice(&text);
            assert_eq!(again.ok().as_ref(), Some(&doc), "export does not re-import");
        }
        exercise(&doc);
    }
    if let Ok(delta) = serde_json::from_slice::<ClientFeaturesDelta>(data) {
        let ids: Vec<u64> = delta.events.iter().map(|e| e.event_id()).collect();
        assert_eq!(ids.len(), delta.events.len());
        let folded = apply_events(delta.events.clone());
        // Folding onto the empty document by hand gives the same state.
        let empty = ClientFeatures {
            version: 2,
            features: Vec::new(),
            segments: None,
        };
        assert_eq!(apply_events_to(empty, delta.events), folded);
        let _ = import_checks(&folded);
        exercise(&folded);
    }
});
