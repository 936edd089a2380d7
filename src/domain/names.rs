//! Name rules for projects, features, environments, segments and tokens.
//!
//! Unleash requires "URL-friendly" names: what `encodeURIComponent` leaves alone, so a
//! name can be put in a path unescaped. Imports are looser (any printable string, as
//! the client-spec fixtures use UTF-8 flag names), because import must round-trip
//! whatever an Unleash instance exported.

/// Longest name accepted anywhere.
pub const MAX_NAME_LEN: usize = 100;

/// Checks Unleash's URL-friendly rule; the error is a sentence for the API's `message`.
pub fn validate_url_friendly(name: &str) -> Result<(), String> {
    validate_printable(name)?;
    if name == "." || name == ".." {
        return Err("must not be `.` or `..`".into());
    }
    if let Some(c) = name.chars().find(|c| !is_url_friendly(*c)) {
        return Err(format!(
            "must be URL-friendly (letters, digits and - _ . ! ~ * ' ( )), found `{c}`"
        ));
    }
    Ok(())
}

/// The import rule: non-empty, bounded, no control characters, no surrounding spaces.
pub fn validate_printable(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if name.trim() != name {
        return Err("must not start or end with white space".into());
    }
    Ok(())
}

fn is_url_friendly(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_friendly_names_are_accepted() {
        for name in ["new.checkout", "a", "Feature-1_x~(y)", "x*'!"] {
            assert_eq!(validate_url_friendly(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_needing_escapes_or_empty_are_rejected() {
        for name in ["", "a b", "a/b", "hø", "..", "a?b", "a#b", "a%20"] {
            assert!(validate_url_friendly(name).is_err(), "{name}");
        }
        assert!(validate_url_friendly(&"x".repeat(101)).is_err());
    }

    #[test]
    fn imports_accept_utf8_but_not_control_characters() {
        assert_eq!(validate_printable("Feature.UTF-8.Hellø_Wørld"), Ok(()));
        assert!(validate_printable("a\nb").is_err());
        assert!(validate_printable(" a").is_err());
    }
}
