//! Constraint compilation and evaluation, operator by operator.
//!
//! Everything that can be parsed ahead of time (numbers, dates, semvers, regexes, CIDR
//! ranges, lower-cased value sets) is parsed in [`CompiledConstraint::compile`]. A
//! constraint whose own definition is unusable (unknown operator, unparseable value)
//! compiles to `Invalid`, which is false even when `inverted`: a typo must not switch a
//! flag on for everyone. When the *context* value is missing or unparseable the operator
//! is false and `inverted` flips it, as in every Unleash SDK.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use regex::{Regex, RegexBuilder};
use semver::Version;

use super::context::{Context, ContextField};
use super::hash::FastHash;
use crate::domain::model::Constraint;

/// A compiled constraint: context field, operator with pre-parsed operands, inversion.
#[derive(Debug, Clone)]
pub(crate) struct CompiledConstraint {
    field: ContextField,
    inverted: bool,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    In(StrSet, bool),
    NotIn(StrSet, bool),
    StartsWith(StrList),
    EndsWith(StrList),
    Contains(StrList),
    Num(Cmp, f64),
    Date(Cmp, DateTime<Utc>),
    Semver(Cmp, Version),
    Regex(Regex),
    InCidr(Box<[IpNet]>),
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    #[inline]
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Cmp::Eq => ordering == Ordering::Equal,
            Cmp::Gt => ordering == Ordering::Greater,
            Cmp::Gte => ordering != Ordering::Less,
            Cmp::Lt => ordering == Ordering::Less,
            Cmp::Lte => ordering != Ordering::Greater,
        }
    }
}

impl CompiledConstraint {
    pub(crate) fn compile(c: &Constraint) -> Self {
        let case_insensitive = c.case_insensitive.unwrap_or(false);
        let op = match c.operator.as_str() {
            "IN" => Op::In(
                StrSet::cleaned(multi(c), case_insensitive),
                case_insensitive,
            ),
            "NOT_IN" => Op::NotIn(
                StrSet::cleaned(multi(c), case_insensitive),
                case_insensitive,
            ),
            "STR_STARTS_WITH" => Op::StartsWith(StrList::new(multi(c), case_insensitive)),
            "STR_ENDS_WITH" => Op::EndsWith(StrList::new(multi(c), case_insensitive)),
            "STR_CONTAINS" => Op::Contains(StrList::new(multi(c), case_insensitive)),
            "NUM_EQ" => num_op(Cmp::Eq, c),
            "NUM_GT" => num_op(Cmp::Gt, c),
            "NUM_GTE" => num_op(Cmp::Gte, c),
            "NUM_LT" => num_op(Cmp::Lt, c),
            "NUM_LTE" => num_op(Cmp::Lte, c),
            "DATE_AFTER" => date_op(Cmp::Gt, c),
            "DATE_BEFORE" => date_op(Cmp::Lt, c),
            "SEMVER_EQ" => semver_op(Cmp::Eq, c),
            "SEMVER_GT" => semver_op(Cmp::Gt, c),
            "SEMVER_GTE" => semver_op(Cmp::Gte, c),
            "SEMVER_LT" => semver_op(Cmp::Lt, c),
            "SEMVER_LTE" => semver_op(Cmp::Lte, c),
            "REGEX" => single(c)
                .and_then(|pattern| {
                    RegexBuilder::new(pattern)
                        .case_insensitive(case_insensitive)
                        .build()
                        .ok()
                })
                .map_or(Op::Invalid, Op::Regex),
            "IN_CIDR" => {
                let nets: Box<[IpNet]> = multi(c).iter().filter_map(|v| IpNet::parse(v)).collect();
                if nets.is_empty() {
                    Op::Invalid
                } else {
                    Op::InCidr(nets)
                }
            }
            _ => Op::Invalid,
        };
        Self {
            field: ContextField::parse(&c.context_name),
            inverted: c.inverted.unwrap_or(false),
            op,
        }
    }

    /// Whether `ctx` satisfies the constraint.
    pub(crate) fn matches(&self, ctx: &Context) -> bool {
        if matches!(self.op, Op::Invalid) {
            return false;
        }
        self.op.eval(&self.field, ctx) != self.inverted
    }
}

impl Op {
    fn eval(&self, field: &ContextField, ctx: &Context) -> bool {
        let value = field.resolve(ctx);
        match self {
            Op::In(set, ci) => value.is_some_and(|v| set.contains(&fold(v, *ci))),
            Op::NotIn(set, ci) => !value.is_some_and(|v| set.contains(&fold(v, *ci))),
            Op::StartsWith(list) => value.is_some_and(|v| list.any(v, |v, x| v.starts_with(x))),
            Op::EndsWith(list) => value.is_some_and(|v| list.any(v, |v, x| v.ends_with(x))),
            Op::Contains(list) => value.is_some_and(|v| list.any(v, |v, x| v.contains(x))),
            Op::Num(cmp, target) => value
                .and_then(parse_num)
                .and_then(|v| v.partial_cmp(target))
                .is_some_and(|o| cmp.holds(o)),
            Op::Date(cmp, target) => {
                let instant = match (value, field) {
                    (Some(v), _) => parse_date(v),
                    (None, ContextField::CurrentTime) => Some(Utc::now()),
                    (None, _) => None,
                };
                instant.is_some_and(|t| cmp.holds(t.cmp(target)))
            }
            Op::Semver(cmp, target) => value
                .and_then(parse_semver)
                .is_some_and(|v| cmp.holds(semver_cmp(&v, target))),
            Op::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            Op::InCidr(nets) => value
                .and_then(parse_ip)
                .is_some_and(|ip| nets.iter().any(|n| n.contains(ip))),
            Op::Invalid => false,
        }
    }
}

/// List operands: `values`, or the single `value` when `values` is absent.
fn multi(c: &Constraint) -> Cow<'_, [String]> {
    match (&c.values, &c.value) {
        (Some(values), _) => Cow::Borrowed(values.as_slice()),
        (None, Some(value)) => Cow::Owned(vec![value.clone()]),
        (None, None) => Cow::Borrowed(&[]),
    }
}

/// Single operand: `value`, or the first of `values` when `value` is absent.
fn single(c: &Constraint) -> Option<&str> {
    c.value.as_deref().or_else(|| {
        c.values
            .as_ref()
            .and_then(|v| v.first())
            .map(String::as_str)
    })
}

fn num_op(cmp: Cmp, c: &Constraint) -> Op {
    single(c)
        .and_then(parse_num)
        .map_or(Op::Invalid, |n| Op::Num(cmp, n))
}

fn date_op(cmp: Cmp, c: &Constraint) -> Op {
    single(c)
        .and_then(parse_date)
        .map_or(Op::Invalid, |d| Op::Date(cmp, d))
}

fn semver_op(cmp: Cmp, c: &Constraint) -> Op {
    single(c)
        .and_then(parse_semver)
        .map_or(Op::Invalid, |v| Op::Semver(cmp, v))
}

/// A number as JavaScript's `Number()` reads a decimal literal; NaN is rejected.
pub(crate) fn parse_num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| !n.is_nan())
}

/// An instant: RFC 3339 (any offset), or a bare date / date-time taken as UTC, which is
/// how JavaScript's `Date` reads ISO dates without an offset from the Unleash UI.
pub(crate) fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = s.parse::<DateTime<Utc>>() {
        return Some(t);
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Strict SemVer 2.0: a leading `v`, a missing patch or leading zeros are rejected.
pub(crate) fn parse_semver(s: &str) -> Option<Version> {
    let s = s.trim();
    plain_release(s).or_else(|| Version::parse(s).ok())
}

/// Fast path for the common `MAJOR.MINOR.PATCH` with no pre-release or build; anything
/// else (including what it rejects) goes to the full parser.
fn plain_release(s: &str) -> Option<Version> {
    fn number(part: &[u8]) -> Option<u64> {
        if part.is_empty() || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        part.iter().try_fold(0u64, |n, &b| {
            b.is_ascii_digit()
                .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
                .flatten()
        })
    }
    let mut parts = s.as_bytes().split(|&b| b == b'.');
    let (major, minor, patch) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Version::new(number(major)?, number(minor)?, number(patch)?))
}

/// SemVer precedence: build metadata is ignored (unlike `Version`'s `Ord`) and a
/// release ranks above its pre-releases.
pub(crate) fn semver_cmp(a: &Version, b: &Version) -> Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

/// An IP address; IPv4-mapped IPv6 (`::ffff:a.b.c.d`, as dual-stack sockets report
/// IPv4 peers) is unwrapped so it matches IPv4 ranges.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Lower-cases only when needed, so case-insensitive matching of already lower-case
/// ASCII input does not allocate.
#[inline]
fn fold(s: &str, case_insensitive: bool) -> Cow<'_, str> {
    if case_insensitive && (!s.is_ascii() || s.bytes().any(|b| b.is_ascii_uppercase())) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A set of strings: a linear scan for the usual handful of values, a hash set beyond.
#[derive(Debug, Clone)]
pub(crate) enum StrSet {
    Small(Box<[Box<str>]>),
    Large(HashSet<Box<str>, FastHash>),
}

impl StrSet {
    const SMALL: usize = 12;

    pub(crate) fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut unique: Vec<Box<str>> = Vec::new();
        let mut seen: HashSet<&str, FastHash> = HashSet::default();
        for v in values {
            if seen.insert(v) {
                unique.push(v.into());
            }
        }
        if unique.len() <= Self::SMALL {
            StrSet::Small(unique.into_boxed_slice())
        } else {
            StrSet::Large(unique.into_iter().collect())
        }
    }

    /// Constraint values as the Node SDK cleans them: trimmed, empty ones dropped,
    /// lower-cased for case-insensitive operators.
    fn cleaned(values: Cow<'_, [String]>, case_insensitive: bool) -> Self {
        let cleaned = clean(&values, case_insensitive);
        Self::new(cleaned.iter().map(|s| &**s))
    }

    #[inline]
    pub(crate) fn contains(&self, value: &str) -> bool {
        match self {
            StrSet::Small(values) => values.iter().any(|v| **v == *value),
            StrSet::Large(values) => values.contains(value),
        }
    }
}

fn clean(values: &[String], case_insensitive: bool) -> Vec<Box<str>> {
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            if case_insensitive {
                v.to_lowercase().into_boxed_str()
            } else {
                v.into()
            }
        })
        .collect()
}

/// Operand list of the `STR_*` operators.
#[derive(Debug, Clone)]
struct StrList {
    values: Box<[Box<str>]>,
    case_insensitive: bool,
}

impl StrList {
    fn new(values: Cow<'_, [String]>, case_insensitive: bool) -> Self {
        Self {
            values: clean(&values, case_insensitive).into_boxed_slice(),
            case_insensitive,
        }
    }

    #[inline]
    fn any(&self, value: &str, test: impl Fn(&str, &str) -> bool) -> bool {
        let value = fold(value, self.case_insensitive);
        self.values.iter().any(|v| test(&value, v))
    }
}

/// An IP network (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr = addr.parse::<IpAddr>().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    #[inline]
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraint(field: &str, op: &str, values: &[&str], value: Option<&str>) -> Constraint {
        Constraint {
            context_name: field.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
            value: value.map(Into::into),
            case_insensitive: None,
            inverted: None,
        }
    }

    fn check(c: &Constraint, ctx: &Context) -> bool {
        CompiledConstraint::compile(c).matches(ctx)
    }

    fn version(s: &str) -> Version {
        parse_semver(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn semver_precedence_orders_prereleases_below_the_release() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.10.0",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert_eq!(
                semver_cmp(&version(pair[0]), &version(pair[1])),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn the_plain_release_fast_path_agrees_with_the_full_parser() {
        for ok in ["0.0.0", "1.2.3", "10.20.30", "18446744073709551615.0.1"] {
            assert_eq!(plain_release(ok), Version::parse(ok).ok(), "{ok}");
        }
        for odd in [
            "18446744073709551616.0.0",
            "1.2.3-rc",
            "1.2.3+b",
            "00.1.1",
            "1.2.",
        ] {
            assert_eq!(plain_release(odd), None, "{odd}");
        }
        assert_eq!(
            parse_semver(" 1.2.3-rc.1 ").map(|v| v.pre.to_string()),
            Some("rc.1".into())
        );
    }

    #[test]
    fn semver_equality_ignores_build_metadata() {
        assert_eq!(
            semver_cmp(&version("1.2.3+a"), &version("1.2.3+b")),
            Ordering::Equal
        );
    }

    #[test]
    fn semver_rejects_leading_v_partial_versions_and_garbage() {
        for bad in [
            "v1.2.3",
            "1.2",
            "01.2.3",
            "1.02.3",
            "1.2.3.4",
            "1..3",
            "not a semver",
            "",
        ] {
            assert!(parse_semver(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_broken_semver_constraint_value_is_false_even_when_inverted() {
        let mut c = constraint("version", "SEMVER_EQ", &[], Some("v2.0.0"));
        c.inverted = Some(true);
        assert!(!check(
            &c,
            &Context::default().with_property("version", "1.0.0")
        ));
    }

    #[test]
    fn a_broken_context_semver_is_false_and_inversion_flips_it() {
        let mut c = constraint("version", "SEMVER_GTE", &[], Some("1.0.0"));
        let ctx = Context::default().with_property("version", "v2.0.0");
        assert!(!check(&c, &ctx));
        c.inverted = Some(true);
        assert!(check(&c, &ctx));
    }

    #[test]
    fn cidr_ranges_match_ipv4_ipv6_and_ipv4_mapped_addresses() {
        let net = |s: &str| IpNet::parse(s).unwrap_or_else(|| panic!("{s}"));
        let ip = |s: &str| parse_ip(s).unwrap_or_else(|| panic!("{s}"));
        assert!(net("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(net("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!net("10.1.2.3").contains(ip("10.1.2.4")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(net("::/0").contains(ip("::1")));
        assert!(!net("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn malformed_cidrs_are_rejected() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "127.invalid",
            "bad::cidr",
            "1.2.3.4/",
        ] {
            assert!(IpNet::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn dates_accept_offsets_fractional_seconds_and_bare_dates() {
        let utc = |s: &str| parse_date(s).map(|d| d.to_rfc3339());
        assert_eq!(
            utc("2022-01-22T13:00:00.000+02:00").as_deref(),
            Some("2022-01-22T11:00:00+00:00")
        );
        assert_eq!(
            utc("2022-01-22T13:00:00Z").as_deref(),
            Some("2022-01-22T13:00:00+00:00")
        );
        assert_eq!(
            utc("2022-01-22").as_deref(),
            Some("2022-01-22T00:00:00+00:00")
        );
        assert_eq!(
            utc("2022-01-22T13:00:00.5").as_deref(),
            Some("2022-01-22T13:00:00.500+00:00")
        );
        assert!(parse_date("yesterday").is_none());
    }

    #[test]
    fn date_constraints_are_exclusive_and_default_to_now() {
        let after = constraint(
            "currentTime",
            "DATE_AFTER",
            &[],
            Some("2000-01-01T00:00:00Z"),
        );
        let before = constraint(
            "currentTime",
            "DATE_BEFORE",
            &[],
            Some("2000-01-01T00:00:00Z"),
        );
        assert!(check(&after, &Context::default()));
        assert!(!check(&before, &Context::default()));
        let at = Context {
            current_time: Some("2000-01-01T00:00:00.000Z".into()),
            ..Context::default()
        };
        assert!(!check(&after, &at));
        assert!(!check(&before, &at));
    }

    #[test]
    fn an_unparseable_current_time_is_false_rather_than_now() {
        let after = constraint(
            "currentTime",
            "DATE_AFTER",
            &[],
            Some("2000-01-01T00:00:00Z"),
        );
        let ctx = Context {
            current_time: Some("soon".into()),
            ..Context::default()
        };
        assert!(!check(&after, &ctx));
    }

    #[test]
    fn numbers_compare_as_floats_and_reject_nan() {
        let c = constraint("n", "NUM_EQ", &[], Some("12"));
        assert!(check(&c, &Context::default().with_property("n", "12.0")));
        assert!(check(&c, &Context::default().with_property("n", " 12 ")));
        assert!(!check(&c, &Context::default().with_property("n", "NaN")));
        assert!(!check(
            &constraint("n", "NUM_EQ", &[], Some("NaN")),
            &Context::default()
        ));
    }

    #[test]
    fn case_insensitive_in_and_string_operators_fold_both_sides() {
        let mut c = constraint("appName", "IN", &["Web", " Mobile "], None);
        c.case_insensitive = Some(true);
        let ctx = |app: &str| Context {
            app_name: Some(app.into()),
            ..Context::default()
        };
        assert!(check(&c, &ctx("WEB")));
        assert!(check(&c, &ctx("mobile")));
        c.case_insensitive = None;
        assert!(!check(&c, &ctx("web")));
        assert!(check(&c, &ctx("Mobile")));

        let mut s = constraint("email", "STR_ENDS_WITH", &["@Example.COM"], None);
        s.case_insensitive = Some(true);
        assert!(check(
            &s,
            &Context::default().with_property("email", "a@EXAMPLE.com")
        ));
        assert!(check(
            &s,
            &Context::default().with_property("email", "ø@example.com")
        ));
    }

    #[test]
    fn in_and_not_in_accept_a_single_value_when_values_is_absent() {
        let c = constraint("userId", "IN", &[], Some("7"));
        assert!(check(&c, &Context::for_user("7")));
        let c = constraint("userId", "NOT_IN", &[], None);
        assert!(check(&c, &Context::for_user("7")));
    }

    #[test]
    fn large_value_sets_use_the_hash_set_and_still_match() {
        let values: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let c = constraint("userId", "IN", &refs, None);
        let compiled = CompiledConstraint::compile(&c);
        assert!(matches!(compiled.op, Op::In(StrSet::Large(_), _)));
        assert!(compiled.matches(&Context::for_user("user-99")));
        assert!(!compiled.matches(&Context::for_user("user-100")));
    }

    #[test]
    fn unknown_operators_and_invalid_regexes_are_false_even_when_inverted() {
        for (op, value) in [("NOT_A_VALID_OPERATOR", "x"), ("REGEX", "(unclosed")] {
            let mut c = constraint("userId", op, &[], Some(value));
            c.inverted = Some(true);
            assert!(!check(&c, &Context::for_user("x")), "{op}");
        }
    }

    #[test]
    fn regex_searches_anywhere_unless_anchored() {
        let c = constraint("userId", "REGEX", &[], Some("b+"));
        assert!(check(&c, &Context::for_user("abbbc")));
        let c = constraint("userId", "REGEX", &[], Some("^b+$"));
        assert!(!check(&c, &Context::for_user("abbbc")));
    }
}
