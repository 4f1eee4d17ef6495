//! The key table: every key of the configuration file with its type, default and doc comment,
//! taken from the config types themselves (their schema and `Config::default()`), which types
//! the `CRAIL_*` variables and renders docs/config.md.

use super::Config;

/// The sections of the file, as `CRAIL_<SECTION>_` names them.
pub(super) const SECTIONS: [&str; 4] = ["namenode", "datanode", "client", "security"];

/// `CRAIL_CLIENT_BUSY_POLL` -> `("client", "busy_poll")`; `None` if it names no section.
pub(super) fn env_key(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("CRAIL_")?.to_ascii_lowercase();
    SECTIONS.iter().find_map(|section| {
        let key = rest.strip_prefix(section)?.strip_prefix('_')?;
        Some(((*section).to_owned(), key.to_owned()))
    })
}

/// How a key's value is written in TOML, hence how its environment variable is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Text, including sizes ("1MiB"), durations ("10s") and addresses.
    Text,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
}

impl KeyKind {
    pub(super) fn parse(self, text: &str) -> std::result::Result<toml::Value, String> {
        let t = text.trim();
        match self {
            Self::Text => Ok(toml::Value::String(text.to_owned())),
            Self::Integer => t
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| format!("{text:?} is not a whole number")),
            Self::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
                "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
                _ => Err(format!("{text:?} is not true or false")),
            },
        }
    }
}

/// One configuration key: where it lives, its type, default and meaning.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Its `[section]`.
    pub section: String,
    /// Its name inside the section.
    pub key: String,
    /// Its type.
    pub kind: KeyKind,
    /// Its default as TOML text; `None` when unset by default.
    pub default: Option<String>,
    /// Its doc comment in the code, on one line.
    pub doc: String,
}

impl KeyInfo {
    /// The environment variable that sets it.
    pub fn env(&self) -> String {
        format!("CRAIL_{}_{}", self.section, self.key).to_ascii_uppercase()
    }
}

/// Every key of the file, in the order of the code, from the config types' schema (their doc
/// comments) and their defaults.
pub fn keys() -> Vec<KeyInfo> {
    let schema = schemars::schema_for!(Config);
    let root = schema.as_value();
    let defs = &root["$defs"];
    let resolve = |v: &'_ serde_json::Value| -> serde_json::Value {
        match v.get("$ref").and_then(|r| r.as_str()) {
            Some(r) => defs[r.trim_start_matches("#/$defs/")].clone(),
            None => v.clone(),
        }
    };
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let mut keys = Vec::new();
    for section in SECTIONS {
        let def = resolve(&root["properties"][section]);
        let Some(props) = def["properties"].as_object() else {
            continue;
        };
        for (key, prop) in props {
            let prop = resolve(prop);
            let types: Vec<&str> = match &prop["type"] {
                serde_json::Value::String(t) => vec![t.as_str()],
                serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
                _ => vec!["string"], // enums of names
            };
            let kind = if types.contains(&"integer") {
                KeyKind::Integer
            } else if types.contains(&"boolean") {
                KeyKind::Boolean
            } else {
                KeyKind::Text
            };
            let doc = root["properties"][section]["properties"][key]["description"]
                .as_str()
                .or_else(|| def["properties"][key]["description"].as_str())
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            // Enums of names: list them.
            let names: Vec<String> = match (&prop["enum"], &prop["oneOf"]) {
                (serde_json::Value::Array(names), _) => names.iter(),
                (_, serde_json::Value::Array(variants)) => variants.iter(),
                _ => [].iter(),
            }
            .filter_map(|v| v.as_str().or_else(|| v["const"].as_str()))
            .map(|name| format!("`{name}`"))
            .collect();
            let doc = if names.is_empty() {
                doc
            } else {
                format!("{doc} One of {}.", names.join(", "))
            };
            let default = defaults
                .get(section)
                .and_then(|t| t.get(key))
                .map(|v| v.to_string());
            keys.push(KeyInfo {
                section: section.to_owned(),
                key: key.clone(),
                kind,
                default,
                doc,
            });
        }
    }
    keys
}

/// docs/config.md: every key with its environment variable, default and meaning.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Configuration keys\n\n\
         Generated from the code (`crail-store/src/config.rs`): \
         `UPDATE_DOCS=1 cargo test -p crail-store config_md` rewrites it, and the test suite \
         fails while it is stale.\n\n\
         Every key can be set in one TOML file (`--config FILE`, or the file `CRAIL_CONF` \
         names) under its `[section]`, by its environment variable, and some by a flag of \
         `crail`: a flag wins over the environment, which wins over the file, which wins over \
         the default. Sizes take binary units (`4096`, `64KiB`, `1MiB`, `2g`), durations too \
         (`50us`, `250ms`, `10s`, `2m`). The shared secret goes in `[security] secret` (or \
         `CRAIL_SECURITY_SECRET`) and reaches every section.\n",
    );
    let keys = keys();
    for section in SECTIONS {
        out.push_str(&format!(
            "\n## [{section}]\n\n| key | environment | default | meaning |\n|---|---|---|---|\n"
        ));
        for k in keys.iter().filter(|k| k.section == section) {
            let default = k
                .default
                .as_deref()
                .map_or("unset".to_owned(), |d| format!("`{d}`"));
            out.push_str(&format!(
                "| `{}` | `{}` | {} | {} |\n",
                k.key,
                k.env(),
                default,
                k.doc.replace('|', "\\|")
            ));
        }
    }
    out
}
