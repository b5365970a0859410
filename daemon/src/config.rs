//! TOML config: parse, then validate, and say exactly which field is wrong.
//!
//! Config types derive `Deserialize` with `#[serde(deny_unknown_fields)]` (a typo is an error, not a
//! silently ignored key) and implement [`Validate`] for the rules serde cannot express (ranges,
//! relations between fields). [`load`] runs both and returns every problem at once.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A config that can check itself beyond what its types already guarantee.
pub trait Validate {
    /// Reports each broken rule through `v`, naming the field by its dotted path.
    fn validate(&self, v: &mut Validator);
}

/// Collects field problems during [`Validate::validate`].
#[derive(Debug, Default)]
pub struct Validator {
    problems: Vec<FieldProblem>,
    /// The dotted path [`Validator::nested`] puts in front of every field name ("" at the top).
    prefix: String,
}

impl Validator {
    /// Runs `f` with every field it names put under `section` (`"cloud"`: `token` is reported as
    /// `cloud.token`), so a section validates itself with its own field names wherever it is
    /// embedded. Nests: a section inside a section gets both prefixes. An empty `section` adds
    /// nothing.
    pub fn nested(&mut self, section: &str, f: impl FnOnce(&mut Validator)) {
        let outer = self.prefix.clone();
        if !section.is_empty() {
            self.prefix = if outer.is_empty() {
                section.to_owned()
            } else {
                format!("{outer}.{section}")
            };
        }
        f(self);
        self.prefix = outer;
    }

    /// Records a problem with `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl fmt::Display) {
        if !ok {
            self.fail(field, message);
        }
    }

    pub fn fail(&mut self, field: &str, message: impl fmt::Display) {
        let field = if self.prefix.is_empty() {
            field.to_owned()
        } else if field.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.problems.push(FieldProblem {
            field,
            message: message.to_string(),
        });
    }

    /// Checks `min <= value <= max`.
    pub fn range<T: PartialOrd + fmt::Display>(&mut self, field: &str, value: T, min: T, max: T) {
        if !(min <= value && value <= max) {
            self.fail(
                field,
                format_args!("{value} is out of range: must be {min} to {max}"),
            );
        }
    }

    pub fn problems(&self) -> &[FieldProblem] {
        &self.problems
    }
}

/// One broken rule: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<FieldProblem>,
    },
}

fn list(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigError {
    /// Every field this error names (empty for read and syntax errors).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            ConfigError::Field { field, .. } => vec![field.as_str()],
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(|p| p.field.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Reads, parses and validates a config file.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `origin` is only used in error messages.
///
/// Errors say where (line and column) and what, but never quote the file: toml's own rendering
/// prints the offending line, and that line may hold a token. A value of a secret field
/// ([`is_secret`]) is never echoed either (serde's "invalid type: string \"…\"" would).
pub fn parse<T: DeserializeOwned + Validate>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_owned(),
        message: describe(&e, text, true),
    })?;
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let message = describe(e.inner(), text, is_secret(&field));
        if field == "." {
            // unknown or missing top-level keys: toml's message names the key itself
            ConfigError::Syntax {
                path: origin.to_owned(),
                message,
            }
        } else {
            ConfigError::Field {
                path: origin.to_owned(),
                field,
                message,
            }
        }
    })?;
    let mut v = Validator::default();
    value.validate(&mut v);
    if v.problems.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            path: origin.to_owned(),
            problems: v.problems,
        })
    }
}

/// Whether a dotted field path names a secret (a token, a password, a private key's text):
/// its value never appears in an error.
pub fn is_secret(field: &str) -> bool {
    let last = field
        .rsplit('.')
        .next()
        .unwrap_or(field)
        .to_ascii_lowercase();
    if last.ends_with("_file") || last.ends_with("_path") {
        return false; // where the secret is, not the secret
    }
    [
        "token",
        "secret",
        "password",
        "passphrase",
        "credential",
        "private",
    ]
    .iter()
    .any(|s| last.contains(s))
}

/// `line L, column C: <toml's message>`, one line, the file's text never quoted; with `redact`,
/// anything the message quotes (a value) is replaced.
fn describe(e: &toml::de::Error, text: &str, redact: bool) -> String {
    let mut message = e.message().lines().collect::<Vec<_>>().join(" ");
    if redact {
        message = redact_quoted(&message);
    }
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Replaces every `"…"` and `` `…` `` in a message with `<redacted>`, except the short fixed
/// tokens toml's parser quotes when it says what it expected (`"`, `'`, `=`, `]`, `"""` …).
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(['"', '`']) {
        let q = if rest[i..].starts_with('"') { '"' } else { '`' };
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find(q) {
            Some(j) if after[..j].chars().count() <= 3 => {
                out.push(q);
                out.push_str(&after[..j]);
                out.push(q);
                rest = &after[j + 1..];
            }
            Some(j) => {
                out.push_str("<redacted>");
                rest = &after[j + 1..];
            }
            None => {
                out.push_str("<redacted>");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sections_prefix_their_fields_once_and_unwind() {
        let mut v = Validator::default();
        v.nested("cloud", |v| {
            v.fail("token", "empty");
            v.nested("tls", |v| v.fail("ca", "missing"));
            v.nested("", |v| v.fail("url", "bad"));
            v.fail("", "the section itself");
        });
        v.fail("state_dir", "missing");
        let fields: Vec<_> = v.problems().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cloud.token",
                "cloud.tls.ca",
                "cloud.url",
                "cloud",
                "state_dir"
            ]
        );
    }
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        name: String,
        link: Link,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Link {
        timeout_s: f64,
        retries: u32,
    }

    impl Validate for Cfg {
        fn validate(&self, v: &mut Validator) {
            v.check(!self.name.is_empty(), "name", "must not be empty");
            v.range("link.timeout_s", self.link.timeout_s, 0.1, 60.0);
        }
    }

    fn parse_cfg(text: &str) -> Result<Cfg, ConfigError> {
        parse(text, Path::new("/etc/skypost/test.toml"))
    }

    #[test]
    fn good_config_loads() {
        let c = parse_cfg("name = \"a\"\n[link]\ntimeout_s = 2.0\nretries = 3\n").unwrap();
        assert_eq!(c.link.retries, 3);
    }

    #[test]
    fn wrong_type_names_the_field_and_file() {
        let e = parse_cfg("name = \"a\"\n[link]\ntimeout_s = \"fast\"\nretries = 3\n").unwrap_err();
        assert_eq!(e.fields(), ["link.timeout_s"]);
        let s = e.to_string();
        assert!(
            s.contains("/etc/skypost/test.toml") && s.contains("link.timeout_s"),
            "{s}"
        );
    }

    #[test]
    fn typo_is_refused_with_its_name() {
        let e = parse_cfg("name = \"a\"\n[link]\ntimeout_s = 2.0\nretires = 3\n").unwrap_err();
        assert!(e.to_string().contains("retires"), "{e}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let e = parse_cfg("name = \"\"\n[link]\ntimeout_s = 600.0\nretries = 3\n").unwrap_err();
        assert_eq!(e.fields(), ["name", "link.timeout_s"]);
        assert!(e.to_string().contains("600"), "{e}");
    }

    #[test]
    fn syntax_error_says_where() {
        let e = parse_cfg("name = \n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }));
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Secret {
        token: String,
        retries: u32,
    }

    impl Validate for Secret {
        fn validate(&self, _: &mut Validator) {}
    }

    /// Issue 18: an error must never print a token, whatever is wrong around it.
    #[test]
    fn errors_never_echo_a_secret() {
        const SECRET: &str = "s3cr3t-t0ken-0123456789";
        let cases = [
            // unterminated string: toml's rendering prints the whole line
            format!("token = \"{SECRET}\nretries = 3\n"),
            // a bare word
            format!("token = {SECRET}\nretries = 3\n"),
            // garbage after the value
            format!("token = \"{SECRET}\" x\nretries = 3\n"),
            // a wrong type elsewhere, the token on the line before
            format!("token = \"{SECRET}\"\nretries = \"three\"\n"),
            // a duplicate key
            format!("token = \"{SECRET}\"\ntoken = \"{SECRET}\"\nretries = 3\n"),
            // the token's type is wrong (an array holding it)
            format!("token = [\"{SECRET}\"]\nretries = 3\n"),
            // an unknown key next to it
            format!("token = \"{SECRET}\"\nretries = 3\nextra = \"{SECRET}\"\n"),
        ];
        for text in &cases {
            let e = parse::<Secret>(text, Path::new("/etc/skypost/x.toml")).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("s3cr3t"), "{text:?} gave {shown}");
        }
        assert!(is_secret("http.token") && is_secret("drones[3].token_sha256"));
        assert!(!is_secret("http.token_file") && !is_secret("board.path"));
    }

    #[test]
    fn missing_file_is_named() {
        let e = load::<Cfg>(Path::new("/nonexistent/skypost.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/skypost.toml"), "{e}");
    }
}
