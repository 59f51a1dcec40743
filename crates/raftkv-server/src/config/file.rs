//! etcd's YAML configuration file (`--config-file`): the keys are the flag names, TLS
//! settings nested under `client-transport-security:` / `peer-transport-security:`. As in
//! etcd, the file replaces the command line and the environment. Unlike etcd, a key
//! raftkv does not know is reported (etcd drops it silently), and an unimplemented one
//! gets the same treatment as its flag.

use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::settings::Settings;
use super::{ConfigError, unsupported};

/// The flag each key of etcd's `client-transport-security:` section stands for.
const CLIENT_SECURITY_KEYS: &[(&str, &str)] = &[
    ("cert-file", "cert-file"),
    ("key-file", "key-file"),
    ("client-cert-file", "client-cert-file"),
    ("client-key-file", "client-key-file"),
    ("client-cert-auth", "client-cert-auth"),
    ("trusted-ca-file", "trusted-ca-file"),
    ("auto-tls", "auto-tls"),
    ("crl-file", "client-crl-file"),
    ("allowed-hostname", "client-cert-allowed-hostname"),
];

/// The flag each key of etcd's `peer-transport-security:` section stands for.
const PEER_SECURITY_KEYS: &[(&str, &str)] = &[
    ("cert-file", "peer-cert-file"),
    ("key-file", "peer-key-file"),
    ("client-cert-file", "peer-client-cert-file"),
    ("client-key-file", "peer-client-key-file"),
    ("client-cert-auth", "peer-client-cert-auth"),
    ("trusted-ca-file", "peer-trusted-ca-file"),
    ("auto-tls", "peer-auto-tls"),
    ("crl-file", "peer-crl-file"),
    ("allowed-cn", "peer-cert-allowed-cn"),
    ("allowed-hostname", "peer-cert-allowed-hostname"),
    (
        "skip-client-san-verification",
        "experimental-peer-skip-client-san-verification",
    ),
];

fn file_error(path: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// A scalar as the text a flag would carry ("" for null).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Whether a `*-transport-security` value is set (etcd writes unset ones as `""` / false).
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Read the file at `path`; `known` are the keys [`Settings`] reads.
pub fn load(path: &Path, known: &[String], warnings: &mut Vec<String>) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
    let document: Value = serde_yaml_ng::from_str(&text).map_err(|e| file_error(path, e.to_string()))?;
    let entries = match document {
        Value::Null => Mapping::new(),
        Value::Mapping(map) => map,
        _ => return Err(file_error(path, "expected a mapping of flag names to values")),
    };
    let mut flags = Vec::new();
    for (key, value) in entries {
        let Some(name) = key.as_str().map(str::to_string) else {
            return Err(file_error(path, format!("key {key:?} is not a string")));
        };
        if name == "client-transport-security" || name == "peer-transport-security" {
            flags.extend(flatten_transport_security(path, &name, value, warnings)?);
        } else {
            flags.push((name, value));
        }
    }
    let mut recognised = Mapping::new();
    for (name, value) in flags {
        if known.contains(&name) {
            recognised.insert(Value::String(name), value);
        } else if let Some(flag) = unsupported::find(&name) {
            let text = scalar_text(&value)
                .ok_or_else(|| file_error(path, format!("{name}: expected a single value")))?;
            unsupported::check(flag, &text, warnings)?;
        } else {
            warnings.push(format!(
                "config file {}: unknown key {name:?} is ignored",
                path.display()
            ));
        }
    }
    serde_yaml_ng::from_value(Value::Mapping(recognised.clone())).map_err(|e| {
        // serde's error does not say which key; find the first that fails alone.
        let key = recognised.into_iter().find_map(|(key, value)| {
            let alone = Mapping::from_iter([(key.clone(), value)]);
            serde_yaml_ng::from_value::<Settings>(Value::Mapping(alone))
                .is_err()
                .then(|| key.as_str().unwrap_or_default().to_string())
        });
        match key {
            Some(key) => file_error(path, format!("{key}: {e}")),
            None => file_error(path, e.to_string()),
        }
    })
}

/// A `*-transport-security:` section as the flags its keys stand for.
fn flatten_transport_security(
    path: &Path,
    section: &str,
    value: Value,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, Value)>, ConfigError> {
    let table = if section == "client-transport-security" {
        CLIENT_SECURITY_KEYS
    } else {
        PEER_SECURITY_KEYS
    };
    let entries = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(map) => map,
        _ => return Err(file_error(path, format!("invalid {section}: expected a mapping"))),
    };
    let mut flags = Vec::new();
    for (key, value) in entries {
        let key = key.as_str().unwrap_or_default();
        match table.iter().find(|(k, _)| *k == key) {
            // An empty value is etcd's "not set".
            Some((_, flag)) if is_set(&value) => flags.push((flag.to_string(), value)),
            Some(_) => {}
            None => warnings.push(format!(
                "config file {}: unknown key {section}.{key} is ignored",
                path.display()
            )),
        }
    }
    Ok(flags)
}
