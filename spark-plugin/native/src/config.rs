//! The store client's configuration from Spark's keys, and the engine's connection to a crail
//! node of the cluster.

use std::net::IpAddr;

use crail_sdk::{Config, Crail, crail_shuffle, crail_store};

use crate::{DEFAULT_CONFIG, Failure, Result};

/// The store settings given as Spark keys (`spark.crail.namenode=...`, one a line) as the
/// `CRAIL_*` variables they stand for: variable, value, Spark key and `section.key` (the last
/// two for messages).
fn spark_settings(settings: &str) -> Result<Vec<(String, String, String, String)>> {
    let mut out = Vec::new();
    for line in settings.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let name = match key.strip_prefix("spark.crail.") {
            Some("namenode") => "client.namenode",
            Some("secret") => "security.secret",
            Some(rest) if rest.starts_with("client.") || rest.starts_with("security.") => rest,
            _ => {
                return Err(Failure::new(
                    "InvalidArgument",
                    format!("{key}: not a crail store setting"),
                ));
            }
        };
        let variable = format!("CRAIL_{}", name.replace('.', "_").to_ascii_uppercase());
        out.push((variable, value.to_owned(), key.to_owned(), name.to_owned()));
    }
    Ok(out)
}

/// Loads the client configuration: `file` if given, else `CRAIL_CONF`, else
/// [`DEFAULT_CONFIG`] if it exists, else the defaults; `CRAIL_CLIENT_*` variables over it, and
/// `settings` (Spark keys, see [`spark_settings`]) over those. A bad Spark key's error names it.
pub fn load_config(file: Option<&str>, settings: Option<&str>) -> Result<Config> {
    let settings = spark_settings(settings.unwrap_or_default())?;
    let file = file
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("CRAIL_CONF").map(std::path::PathBuf::from))
        .or_else(|| {
            let default = std::path::Path::new(DEFAULT_CONFIG);
            default.exists().then(|| default.to_owned())
        });
    let variables = std::env::vars()
        .filter(|(name, _)| !settings.iter().any(|(v, ..)| v == name))
        .chain(
            settings
                .iter()
                .map(|(v, value, ..)| (v.clone(), value.clone())),
        );
    Config::load(file.as_deref(), variables).map_err(|e| {
        let mut text = e.to_string();
        for (variable, value, key, name) in &settings {
            // The secret's value is never shown.
            let shown = if key.contains("secret") {
                "<redacted>"
            } else {
                value
            };
            let named = format!("{key}={shown}");
            text = text.replace(variable.as_str(), &named).replace(
                &format!("configuration: {name}:"),
                &format!("configuration: {named}:"),
            );
        }
        Failure::new("InvalidArgument", text)
    })
}

/// Connects `app` to the crail node at `host` if given; else to the configuration's
/// `local_host` if set; else to the node on `own` (this executor's address) if one runs there;
/// else to one of the cluster's nodes picked by `seed` (so executors of one machine spread over
/// an embedded cluster's nodes), trying the next ones if it does not answer. Nodes in `avoid`
/// (whose services were lost) are tried last.
pub async fn connect(
    config: &Config,
    app: &str,
    host: Option<IpAddr>,
    own: Option<IpAddr>,
    seed: u64,
    avoid: &[String],
) -> Result<Crail> {
    if let Some(host) = host {
        return Ok(Crail::connect_on(&config.client, host, app).await?);
    }
    if config.client.local_host.is_some() {
        return Ok(Crail::connect(&config.client, app).await?);
    }
    let store = crail_store::Store::connect(&config.client)
        .await
        .map_err(crail_sdk::Error::from)?;
    let hosts = crail_shuffle::advertised_hosts(&store)
        .await
        .map_err(crail_sdk::Error::from)?;
    if hosts.is_empty() {
        return Err(Failure::new(
            "NodeLost",
            format!(
                "no crail node runs a shuffle service (namenode {})",
                config.client.namenode
            ),
        ));
    }
    // The node on this host, else from the seed on; nodes to avoid last.
    let first = own
        .map(|a| a.to_string())
        .and_then(|a| hosts.iter().position(|h| *h == a))
        .unwrap_or((seed % hosts.len() as u64) as usize);
    let mut order: Vec<&String> = hosts[first..].iter().chain(&hosts[..first]).collect();
    order.sort_by_key(|h| avoid.contains(h));
    let mut failed = Vec::new();
    for chosen in order {
        let Ok(host) = chosen.parse::<IpAddr>() else {
            continue;
        };
        match Crail::connect_on(&config.client, host, app).await {
            Ok(crail) => return Ok(crail),
            Err(e) => failed.push(format!("{chosen}: {e}")),
        }
    }
    Err(Failure::new(
        "NodeLost",
        format!("no crail node answers ({})", failed.join("; ")),
    ))
}

pub(crate) fn address(text: Option<String>, what: &str) -> Result<Option<IpAddr>> {
    text.filter(|t| !t.is_empty())
        .map(|t| {
            t.parse().map_err(|_| {
                Failure::new(
                    "InvalidArgument",
                    format!("{what} {t:?} is not an IP address"),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_keys_set_the_store_configuration_and_name_themselves_when_wrong() {
        let settings = "spark.crail.namenode=10.0.0.1:9000\nspark.crail.client.rpc_timeout=3s";
        let config = load_config(None, Some(settings)).unwrap();
        assert_eq!(config.client.namenode, "10.0.0.1:9000");
        assert_eq!(config.client.rpc_timeout, std::time::Duration::from_secs(3));
        for (bad, words) in [
            (
                "spark.crail.client.rpc_timeout=soon",
                "spark.crail.client.rpc_timeout=soon",
            ),
            ("spark.crail.client.bogus=1", "not a configuration key"),
            ("spark.crail.shuffle.secret=x", "not a crail store setting"),
        ] {
            let err = load_config(None, Some(bad)).unwrap_err();
            assert_eq!(err.kind, "InvalidArgument");
            assert!(err.message.contains(words), "{bad}: {}", err.message);
        }
        let err = load_config(None, Some("spark.crail.secret=tiny1")).unwrap_err();
        assert!(
            err.message.contains("spark.crail.secret=<redacted>"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("tiny1"), "{}", err.message);
    }
}
