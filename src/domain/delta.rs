//! The `/api/client/delta` wire format and how its events fold into a feature set.
//!
//! Unleash streams changes as `{ "events": [...] }` where each event is tagged by
//! `type`: a `hydration` carries the full state, later events patch it. Applying them
//! is a pure fold, so the same code serves the endpoint, its tests and the client-spec
//! fixtures 19 and 20.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::model::{ClientFeature, ClientFeatures, Segment};

/// Body of `GET /api/client/delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClientFeaturesDelta {
    pub events: Vec<DeltaEvent>,
}

/// One delta event; `eventId` is the revision that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DeltaEvent {
    /// The complete state; replaces whatever the client had.
    #[serde(rename_all = "camelCase")]
    Hydration {
        event_id: u64,
        features: Vec<ClientFeature>,
        #[serde(default)]
        segments: Vec<Segment>,
    },
    /// A feature was created or changed.
    #[serde(rename_all = "camelCase")]
    FeatureUpdated {
        event_id: u64,
        feature: ClientFeature,
    },
    /// A feature was deleted or archived (or left the token's scope).
    #[serde(rename_all = "camelCase")]
    FeatureRemoved {
        event_id: u64,
        feature_name: String,
        #[serde(default)]
        project: String,
    },
    /// A segment was created or changed.
    #[serde(rename_all = "camelCase")]
    SegmentUpdated { event_id: u64, segment: Segment },
    /// A segment was deleted.
    #[serde(rename_all = "camelCase")]
    SegmentRemoved { event_id: u64, segment_id: i64 },
}

impl DeltaEvent {
    /// The revision this event brings the client to.
    pub fn event_id(&self) -> u64 {
        match self {
            DeltaEvent::Hydration { event_id, .. }
            | DeltaEvent::FeatureUpdated { event_id, .. }
            | DeltaEvent::FeatureRemoved { event_id, .. }
            | DeltaEvent::SegmentUpdated { event_id, .. }
            | DeltaEvent::SegmentRemoved { event_id, .. } => *event_id,
        }
    }
}

/// Builds a feature set from nothing by applying `events` in order.
pub fn apply_events(events: impl IntoIterator<Item = DeltaEvent>) -> ClientFeatures {
    let empty = ClientFeatures {
        version: 2,
        features: Vec::new(),
        segments: None,
    };
    apply_events_to(empty, events)
}

/// Applies `events` in order on top of `state`. Updates replace by name (features) or
/// id (segments) in place, new entries are appended, removals of unknown entries are
/// no-ops.
pub fn apply_events_to(
    mut state: ClientFeatures,
    events: impl IntoIterator<Item = DeltaEvent>,
) -> ClientFeatures {
    let mut segments = state.segments.take().unwrap_or_default();
    for event in events {
        match event {
            DeltaEvent::Hydration {
                features,
                segments: hydrated,
                ..
            } => {
                state.features = features;
                segments = hydrated;
            }
            DeltaEvent::FeatureUpdated { feature, .. } => {
                match state.features.iter_mut().find(|f| f.name == feature.name) {
                    Some(existing) => *existing = feature,
                    None => state.features.push(feature),
                }
            }
            DeltaEvent::FeatureRemoved { feature_name, .. } => {
                state.features.retain(|f| f.name != feature_name);
            }
            DeltaEvent::SegmentUpdated { segment, .. } => {
                match segments.iter_mut().find(|s| s.id == segment.id) {
                    Some(existing) => *existing = segment,
                    None => segments.push(segment),
                }
            }
            DeltaEvent::SegmentRemoved { segment_id, .. } => {
                segments.retain(|s| s.id != segment_id);
            }
        }
    }
    state.segments = (!segments.is_empty()).then_some(segments);
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events(value: serde_json::Value) -> Vec<DeltaEvent> {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("bad events: {e}"))
    }

    #[test]
    fn every_event_type_round_trips_through_the_exact_wire_shape() {
        let wire = json!([
            {"type": "hydration", "eventId": 1, "features": [], "segments": []},
            {"type": "feature-updated", "eventId": 2,
             "feature": {"name": "f", "enabled": true, "strategies": [], "variants": null, "description": null}},
            {"type": "feature-removed", "eventId": 3, "featureName": "f", "project": "default"},
            {"type": "segment-updated", "eventId": 4, "segment": {"id": 7, "constraints": []}},
            {"type": "segment-removed", "eventId": 5, "segmentId": 7}
        ]);
        let parsed = events(wire.clone());
        assert_eq!(
            parsed.iter().map(DeltaEvent::event_id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(serde_json::to_value(&parsed).ok(), Some(wire));
    }

    #[test]
    fn hydration_replaces_state_and_later_events_patch_it() {
        let state = apply_events(events(json!([
            {"type": "feature-updated", "eventId": 1, "feature": {"name": "stale", "enabled": true}},
            {"type": "hydration", "eventId": 2,
             "features": [{"name": "a", "enabled": false}, {"name": "b", "enabled": true}],
             "segments": [{"id": 1, "constraints": []}]},
            {"type": "feature-updated", "eventId": 3, "feature": {"name": "a", "enabled": true}},
            {"type": "feature-updated", "eventId": 4, "feature": {"name": "c", "enabled": true}},
            {"type": "feature-removed", "eventId": 5, "featureName": "b", "project": "default"},
            {"type": "segment-updated", "eventId": 6, "segment": {"id": 2, "constraints": []}},
            {"type": "segment-removed", "eventId": 7, "segmentId": 1}
        ])));
        let names: Vec<_> = state
            .features
            .iter()
            .map(|f| (f.name.as_str(), f.enabled))
            .collect();
        assert_eq!(names, [("a", true), ("c", true)]);
        let ids: Vec<_> = state.segments.iter().flatten().map(|s| s.id).collect();
        assert_eq!(ids, [2]);
    }

    #[test]
    fn removing_everything_leaves_no_segments_key() {
        let state = apply_events(events(json!([
            {"type": "segment-updated", "eventId": 1, "segment": {"id": 1, "constraints": []}},
            {"type": "segment-removed", "eventId": 2, "segmentId": 1},
            {"type": "feature-removed", "eventId": 3, "featureName": "nope", "project": "default"}
        ])));
        assert!(state.segments.is_none());
        assert!(state.features.is_empty());
    }
}
