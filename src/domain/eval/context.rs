//! The Unleash evaluation context and how context fields are looked up.
//!
//! Deserialisation follows the Unleash frontend API: scalar values of any JSON type are
//! accepted as strings, `null` means absent, and unknown top-level keys are moved into
//! `properties` (an explicit `properties` entry wins over a moved key). Lookups follow
//! the Node SDK that Unleash's own frontend API runs: an empty string counts as absent,
//! and a standard field that is absent falls back to the property of the same name.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// What a flag is evaluated against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// RFC 3339 instant used by `DATE_AFTER`/`DATE_BEFORE`; absent means "now".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_time: Option<String>,
    /// Custom fields. `applicationHostname` reads `properties["hostname"]`, since the
    /// server must not use its own host name for someone else's request.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl Context {
    /// A context for one user, the most common case.
    pub fn for_user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            ..Self::default()
        }
    }

    /// Sets a custom property (builder style).
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// A property value, empty strings counting as absent.
    #[inline]
    pub(crate) fn property(&self, name: &str) -> Option<&str> {
        non_empty(self.properties.get(name).map(String::as_str))
    }

    /// `userId`, else `sessionId`: the "default" stickiness id.
    #[inline]
    pub(crate) fn default_stickiness_id(&self) -> Option<&str> {
        non_empty(self.user_id.as_deref()).or_else(|| non_empty(self.session_id.as_deref()))
    }
}

#[inline]
fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

/// A context field resolved from its name once, at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContextField {
    UserId,
    SessionId,
    RemoteAddress,
    Environment,
    AppName,
    CurrentTime,
    Property(Box<str>),
}

impl ContextField {
    pub(crate) fn parse(name: &str) -> Self {
        match name {
            "userId" => Self::UserId,
            "sessionId" => Self::SessionId,
            "remoteAddress" => Self::RemoteAddress,
            "environment" => Self::Environment,
            "appName" => Self::AppName,
            "currentTime" => Self::CurrentTime,
            other => Self::Property(other.into()),
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::UserId => "userId",
            Self::SessionId => "sessionId",
            Self::RemoteAddress => "remoteAddress",
            Self::Environment => "environment",
            Self::AppName => "appName",
            Self::CurrentTime => "currentTime",
            Self::Property(name) => name,
        }
    }

    /// The field's value in `ctx`, or `None` when absent or empty.
    #[inline]
    pub(crate) fn resolve<'c>(&self, ctx: &'c Context) -> Option<&'c str> {
        let standard = match self {
            Self::UserId => &ctx.user_id,
            Self::SessionId => &ctx.session_id,
            Self::RemoteAddress => &ctx.remote_address,
            Self::Environment => &ctx.environment,
            Self::AppName => &ctx.app_name,
            Self::CurrentTime => &ctx.current_time,
            Self::Property(name) => return ctx.property(name),
        };
        non_empty(standard.as_deref()).or_else(|| ctx.property(self.name()))
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ContextVisitor)
    }
}

struct ContextVisitor;

impl<'de> Visitor<'de> for ContextVisitor {
    type Value = Context;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an Unleash context object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Context, A::Error> {
        let mut ctx = Context::default();
        let mut explicit = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "userId" => &mut ctx.user_id,
                "sessionId" => &mut ctx.session_id,
                "remoteAddress" => &mut ctx.remote_address,
                "environment" => &mut ctx.environment,
                "appName" => &mut ctx.app_name,
                "currentTime" => &mut ctx.current_time,
                "properties" => {
                    explicit = map.next_value::<Properties>()?.0;
                    continue;
                }
                _ => {
                    if let Scalar(Some(value)) = map.next_value()? {
                        ctx.properties.insert(key, value);
                    }
                    continue;
                }
            };
            *slot = map.next_value::<Scalar>()?.0;
        }
        ctx.properties.extend(explicit);
        Ok(ctx)
    }
}

/// A JSON scalar as a string; `null`, objects and arrays become `None`.
struct Scalar(Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(Some(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar(Some(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(Some(v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(Some(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(Some(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(Some(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar(None))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        Scalar::deserialize(d)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar(None))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar(None))
    }
}

/// The `properties` object; `null` (for the whole object or a value) means absent.
struct Properties(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Option::<BTreeMap<String, Scalar>>::deserialize(deserializer)?;
        Ok(Properties(
            raw.unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.0.map(|v| (k, v)))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Context {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn camel_case_fields_are_read_and_null_properties_are_dropped() {
        let ctx = parse(
            r#"{"userId":"u","sessionId":"s","remoteAddress":"1.2.3.4","environment":"prod",
                "appName":"web","currentTime":"2022-01-30T13:00:00.000Z",
                "properties":{"plan":"pro","gone":null}}"#,
        );
        assert_eq!(ctx.user_id.as_deref(), Some("u"));
        assert_eq!(ctx.session_id.as_deref(), Some("s"));
        assert_eq!(ctx.remote_address.as_deref(), Some("1.2.3.4"));
        assert_eq!(ctx.environment.as_deref(), Some("prod"));
        assert_eq!(ctx.app_name.as_deref(), Some("web"));
        assert_eq!(
            ctx.current_time.as_deref(),
            Some("2022-01-30T13:00:00.000Z")
        );
        assert_eq!(ctx.properties.len(), 1);
        assert_eq!(ctx.property("plan"), Some("pro"));
    }

    #[test]
    fn unknown_top_level_keys_move_into_properties_and_explicit_properties_win() {
        let ctx = parse(r#"{"plan":"free","tier":3,"properties":{"plan":"pro"},"x":null}"#);
        assert_eq!(ctx.property("plan"), Some("pro"));
        assert_eq!(ctx.property("tier"), Some("3"));
        assert_eq!(ctx.property("x"), None);
    }

    #[test]
    fn numbers_and_booleans_become_strings_and_nested_values_are_ignored() {
        let ctx = parse(r#"{"userId":42,"beta":true,"nested":{"a":1},"list":[1,2]}"#);
        assert_eq!(ctx.user_id.as_deref(), Some("42"));
        assert_eq!(ctx.property("beta"), Some("true"));
        assert_eq!(ctx.property("nested"), None);
        assert_eq!(ctx.property("list"), None);
    }

    #[test]
    fn null_standard_fields_and_null_properties_object_are_absent() {
        let ctx = parse(r#"{"userId":null,"properties":null}"#);
        assert_eq!(ctx, Context::default());
    }

    #[test]
    fn empty_strings_count_as_absent_and_standard_fields_fall_back_to_properties() {
        let mut ctx = Context::default().with_property("userId", "from-props");
        ctx.user_id = Some(String::new());
        assert_eq!(ContextField::UserId.resolve(&ctx), Some("from-props"));
        assert_eq!(ctx.default_stickiness_id(), None);
        ctx.session_id = Some("s".into());
        assert_eq!(ctx.default_stickiness_id(), Some("s"));
    }

    #[test]
    fn serialisation_round_trips_and_omits_absent_fields() {
        let ctx = Context::for_user("7").with_property("plan", "pro");
        let json = serde_json::to_string(&ctx).unwrap_or_default();
        assert_eq!(json, r#"{"userId":"7","properties":{"plan":"pro"}}"#);
        assert_eq!(parse(&json), ctx);
    }
}
