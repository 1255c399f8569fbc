//! Which option values are secrets, and how they are hidden wherever a job's options or script
//! are shown: API responses, listings, logs.
//!
//! As Flink does (`GlobalConfiguration.isSensitive`), an option is sensitive when its key
//! contains one of a few words, case-insensitively: passwords, secrets, tokens, keys of cloud
//! accounts. Its value is then shown as [`HIDDEN`]. The job itself still receives the real value;
//! only what is shown is redacted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

/// What a sensitive value is shown as (Flink's mask).
pub const HIDDEN: &str = "******";

/// Words that make an option key sensitive: Flink's list, plus the spellings of AWS keys.
const SENSITIVE_WORDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "apikey",
    "api-key",
    "auth-params",
    "service-key",
    "basic-auth",
    "jaas.config",
    "http-headers",
    "fs.azure.account.key",
    "access-key",
    "access.key",
    "accesskey",
    "credential",
    "private-key",
    "private.key",
];

/// Whether the value of option `key` is a secret.
pub fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE_WORDS.iter().any(|word| key.contains(word))
}

/// `options` with every sensitive value replaced by [`HIDDEN`].
pub fn redact_options(options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|(key, value)| {
            let shown = if is_sensitive(key) { HIDDEN.to_string() } else { value.clone() };
            (key.clone(), shown)
        })
        .collect()
}

/// `'key' = 'value'` as in `WITH (…)` and `SET`: a quoted key, `=` with or without whitespace
/// around it, a quoted value (`''` escapes a quote in either).
static OPTION: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"'((?:[^']|'')*)'(\s*=\s*)'((?:[^']|'')*)'")
        .unwrap_or_else(|e| unreachable!("a valid regex: {e}"))
});

/// The script with the value of every sensitive `'key' = 'value'` option replaced by
/// [`HIDDEN`]; the rest of the text, positions of other tokens aside, is unchanged.
pub fn redact_script(sql: &str) -> Cow<'_, str> {
    OPTION.replace_all(sql, |found: &regex::Captures<'_>| {
        let (key, equals, value) = (&found[1], &found[2], &found[3]);
        let shown = if is_sensitive(&key.replace("''", "'")) { HIDDEN } else { value };
        format!("'{key}'{equals}'{shown}'")
    })
}

/// A job's SQL script as stored and sent: the text itself, whose `Debug` (what a log line or a
/// panic would show) hides its secret option values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Script(String);

impl Script {
    pub fn new(text: impl Into<String>) -> Script {
        Script(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text with secret option values hidden, for showing.
    pub fn redacted(&self) -> Cow<'_, str> {
        redact_script(&self.0)
    }
}

impl Deref for Script {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Script {
    fn from(text: String) -> Script {
        Script(text)
    }
}

impl From<&str> for Script {
    fn from(text: &str) -> Script {
        Script(text.to_owned())
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

/// A job's options (`SET 'key' = 'value'`) as stored: the values themselves, whose `Debug` hides
/// the sensitive ones.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Options(BTreeMap<String, String>);

impl Options {
    /// The options with every sensitive value hidden, for showing.
    pub fn redacted(&self) -> BTreeMap<String, String> {
        redact_options(&self.0)
    }
}

impl Deref for Options {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl From<BTreeMap<String, String>> for Options {
    fn from(options: BTreeMap<String, String>) -> Options {
        Options(options)
    }
}

impl FromIterator<(String, String)> for Options {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(options: I) -> Options {
        Options(options.into_iter().collect())
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_keys_are_found_whatever_their_case() {
        for key in ["password", "s3.secret-key", "AWS.Secret.Access.Key", "kafka.sasl.jaas.config", "auth.token"] {
            assert!(is_sensitive(key), "{key}");
        }
        for key in ["path", "format", "state.checkpoints.dir", "connector", "fields.k.min"] {
            assert!(!is_sensitive(key), "{key}");
        }
    }

    #[test]
    fn a_script_shows_its_secrets_hidden_and_everything_else_as_written() {
        let sql = "SET 'execution.checkpointing.interval' = '1s';\n\
                   SET 's3.secret-key'='hunter2';\n\
                   CREATE TABLE t (a INT) WITH ('connector' = 'filesystem', 'password' = 'it''s secret',\n\
                   'path' = 'out/');";
        let shown = redact_script(sql);
        assert!(!shown.contains("hunter2") && !shown.contains("it''s secret"), "{shown}");
        assert!(shown.contains("SET 's3.secret-key'='******';"), "{shown}");
        assert!(shown.contains("'password' = '******'"), "{shown}");
        assert!(shown.contains("'execution.checkpointing.interval' = '1s'"), "{shown}");
        assert!(shown.contains("'path' = 'out/'"), "{shown}");
        let options = BTreeMap::from([("a.password".to_string(), "x".to_string()), ("b".into(), "y".into())]);
        let shown = redact_options(&options);
        assert_eq!(shown["a.password"], HIDDEN);
        assert_eq!(shown["b"], "y");

        // Stored, they keep their values and serialize them; `Debug` shows them hidden.
        let script = Script::new(sql);
        assert_eq!(script.as_str(), sql);
        assert!(!format!("{script:?}").contains("hunter2"));
        let options = Options::from(options);
        assert_eq!(options["a.password"], "x");
        assert_eq!(serde_json::to_value(&options).expect("serializes")["a.password"], "x");
        assert_eq!(format!("{options:?}"), r#"{"a.password": "******", "b": "y"}"#);
    }
}
