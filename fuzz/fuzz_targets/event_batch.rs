//! `POST /api/events` minus I/O: arbitrary bytes go through `parse_batch`, then every
//! raw event through `validate` (under several clocks) and `derive_id`.
//!
//! Checked besides "never panics":
//! - every id (given or derived) is a lowercase hyphenated UUID;
//! - `derive_id` ignores key order and spacing: the event re-serialised and re-parsed
//!   gets the same id (redelivery dedup depends on it);
//! - validation is deterministic and redaction idempotent (a second pass redacts 0).
#![no_main]

use fusebox::domain::events::{derive_id, parse_batch, validate, PiiRules, Rules};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// 2024-04-24T23:06:40Z, as in the crate's own tests.
const NOW: i64 = 1_714_000_000_000;
const DAY_MS: i64 = 86_400_000;

fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raws) = parse_batch(data) else {
        return;
    };
    let pii = PiiRules::default_terms();
    let none = PiiRules::new(Vec::<String>::new());
    let clocks = [
        Rules {
            now_ms: NOW,
            retention_ms: 90 * DAY_MS,
            pii: &pii,
        },
        Rules {
            now_ms: i64::MAX,
            retention_ms: i64::MAX,
            pii: &pii,
        },
        Rules {
            now_ms: i64::MIN,
            retention_ms: -1,
            pii: &none,
        },
        Rules {
            now_ms: 0,
            retention_ms: i64::MIN,
            pii: &pii,
        },
    ];
    for raw in &raws {
        let id = derive_id(raw);
        assert!(is_uuid(&id), "derived id {id:?} is not a UUID");

        // Same content, different bytes: compact re-serialisation of the parsed value.
        if let Ok(text) = serde_json::to_vec(raw) {
            if let Ok(again) = serde_json::from_slice::<Value>(&text) {
                assert_eq!(
                    derive_id(&again),
                    id,
                    "derive_id changed on re-serialisation"
                );
            }
        }

        for rules in &clocks {
            let first = validate(raw, rules);
            assert_eq!(first, validate(raw, rules), "validate is not deterministic");
            match first {
                Ok(event) => {
                    assert!(is_uuid(&event.id), "event id {:?} is not a UUID", event.id);
                    if let Some(mut props) = event.properties {
                        assert_eq!(rules.pii.redact(&mut props), 0, "redaction not idempotent");
                    }
                }
                Err(rejection) => {
                    assert!(!rejection.code.is_empty());
                    assert!(!rejection.message.is_empty());
                }
            }
        }
    }
});
