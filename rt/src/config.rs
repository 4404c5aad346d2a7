//! The one way both daemons layer their configuration: **flag > environment > file >
//! default**, built on [`figment`].
//!
//! Each daemon has two types:
//! - an all-`Option` *layer* type (clap flags, and the TOML file's schema with
//!   `deny_unknown_fields`), serialized kebab-case: one value per layer;
//! - the *effective* type (`Serialize + Deserialize`, kebab-case, every defaulted field
//!   present), whose `Default` is the bottom layer.
//!
//! [`Layers`] stacks default, file, environment and flags and extracts the effective type.
//! Every key has one name: `max-ttl` in the file, `--max-ttl` on the command line,
//! `GEOLOC_PROBE_MAX_TTL` in the environment. A value of the wrong type fails extraction
//! with a message naming the key as its layer spells it and the layer
//! (`... for key "GEOLOC_PROBE_MAX_TTL" in the environment`); range checks done after
//! extraction report where the value came from with [`Layers::invalid`].
//!
//! Environment values are text: numbers and booleans (`1/0/true/false/yes/no/on/off`) are
//! read leniently from it, lists are comma-separated ([`list_or_comma_separated`]).
//! The environment is read through [`EnvSource`], so tests inject a map.
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Where environment variables come from.
pub trait EnvSource {
    /// Every variable whose name starts with `prefix`, as (name, value).
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
    /// The value of `key`, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment (variables that are not valid UTF-8 are ignored).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Environment variable of a key: (`GEOLOC_PROBE_`, `max-ttl`) → `GEOLOC_PROBE_MAX_TTL`.
pub fn env_key(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.to_ascii_uppercase().replace('-', "_"))
}

/// Key of an environment variable: (`GEOLOC_PROBE_`, `GEOLOC_PROBE_MAX_TTL`) → `max-ttl`.
fn key_of_env(prefix: &str, var: &str) -> Option<String> {
    let rest = var.strip_prefix(prefix)?;
    (!rest.is_empty()).then(|| rest.to_ascii_lowercase().replace('_', "-"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Default,
    File,
    Env,
    Flags,
}

const DEFAULTS: &str = "the defaults";
const ENVIRONMENT: &str = "the environment";
const COMMAND_LINE: &str = "the command line";

/// One layer as a figment provider: its values and how its keys are spelt in messages.
struct Layer {
    kind: Kind,
    name: String,
    env_prefix: &'static str,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let (kind, prefix) = (self.kind, self.env_prefix);
        Metadata::named(self.name.clone()).interpolater(move |_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            match kind {
                Kind::Env => env_key(prefix, &key),
                Kind::Flags => format!("--{key}"),
                Kind::Default | Kind::File => key,
            }
        })
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// A serializable value as a dictionary, without its unset (`None`) fields: an unset
/// option in a layer lets the layer below show through.
fn to_dict<T: Serialize>(value: &T) -> Result<Dict> {
    match Value::serialize(value).map_err(|e| Error::Parse(one_line(&e)))? {
        Value::Dict(_, dict) => Ok(dict
            .into_iter()
            .filter(|(_, v)| !matches!(v, Value::Empty(..)))
            .collect()),
        other => Err(Error::Parse(format!(
            "a configuration layer must be a table, got {}",
            other.to_actual()
        ))),
    }
}

fn one_line(e: &figment::Error) -> String {
    e.to_string().lines().collect::<Vec<_>>().join("; ")
}

/// The stack of configuration layers; see the module documentation.
pub struct Layers {
    figment: Figment,
    env_prefix: &'static str,
}

impl Layers {
    /// Starts with the defaults (the effective type's `Default`); `env_prefix` is the
    /// environment variables' prefix, e.g. `GEOLOC_PROBE_`.
    pub fn new<D: Serialize>(env_prefix: &'static str, defaults: &D) -> Result<Self> {
        Layers {
            figment: Figment::new(),
            env_prefix,
        }
        .push(Kind::Default, DEFAULTS.into(), to_dict(defaults)?)
    }

    fn push(mut self, kind: Kind, name: String, dict: Dict) -> Result<Self> {
        let layer = Layer {
            kind,
            name,
            env_prefix: self.env_prefix,
            dict,
        };
        self.figment = self.figment.merge(layer);
        Ok(self)
    }

    /// Adds the file's values (already parsed into the layer type); `origin` names the
    /// file in messages.
    pub fn file<F: Serialize>(self, origin: &str, file: &F) -> Result<Self> {
        self.push(Kind::File, format!("file {origin}"), to_dict(file)?)
    }

    /// Adds every `<prefix>*` environment variable (empty values count as unset). Keys the
    /// effective type does not know are ignored.
    pub fn env(self, env: &dyn EnvSource) -> Result<Self> {
        let prefix = self.env_prefix;
        let dict: Dict = env
            .vars_with_prefix(prefix)
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, v)| Some((key_of_env(prefix, &k)?, Value::from(v))))
            .collect();
        self.push(Kind::Env, ENVIRONMENT.into(), dict)
    }

    /// Adds the command-line flags (the layer type; unset flags are `None`).
    pub fn flags<F: Serialize>(self, flags: &F) -> Result<Self> {
        self.push(Kind::Flags, COMMAND_LINE.into(), to_dict(flags)?)
    }

    /// The effective configuration: each key from the highest layer that sets it.
    pub fn extract<T: DeserializeOwned>(&self) -> Result<T> {
        self.figment
            .extract_lossy()
            .map_err(|e| Error::Parse(one_line(&e)))
    }

    /// Where the effective value of `key` came from, e.g. `GEOLOC_PROBE_MAX_TTL in the
    /// environment`, `--max-ttl on the command line`, `max-ttl in file probe.toml`.
    pub fn origin(&self, key: &str) -> String {
        match self.figment.find_metadata(key) {
            Some(md) => {
                let spelt = md.interpolate(&Profile::Default, &[key]);
                match md.name.as_ref() {
                    DEFAULTS => format!("the default of {spelt}"),
                    COMMAND_LINE => format!("{spelt} on the command line"),
                    name => format!("{spelt} in {name}"),
                }
            }
            None => format!("{key} (unset)"),
        }
    }

    /// An out-of-range error for `key`, naming where its value came from.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            message: message.into(),
            origin: self.origin(key),
        }
    }
}

/// The effective configuration as TOML (keys as in the file), for `--print-config`.
/// Redact secrets in the value before calling this.
pub fn to_toml<T: Serialize>(effective: &T) -> Result<String> {
    Ok(toml::to_string(effective)?)
}

/// What a secret is replaced with when the configuration is printed.
pub const REDACTED: &str = "<redacted>";

/// Durations as whole milliseconds: `#[serde(with = "geoloc_rt::config::duration_ms")]`.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as milliseconds (u64, saturating).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserializes from milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A float read exactly from a number or from text: `#[serde(deserialize_with =
/// "geoloc_rt::config::float")]` on every `f64` of an effective type. (figment reads short
/// decimal text such as `-33.86` as an `f32`, which is not exactly `-33.86_f64`.)
pub fn float<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    d.deserialize_any(FloatVisitor)
}

/// [`float`] for an `Option<f64>`: `#[serde(default, deserialize_with =
/// "geoloc_rt::config::float_opt")]`.
pub fn float_opt<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    struct Exact(f64);
    impl<'de> Deserialize<'de> for Exact {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            float(d).map(Exact)
        }
    }
    Ok(Option::<Exact>::deserialize(d)?.map(|e| e.0))
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<f64, E> {
        Ok(v)
    }
    fn visit_f32<E: serde::de::Error>(self, v: f32) -> std::result::Result<f64, E> {
        // Only text gives an f32 here (see `float`), and text is read by `visit_str`.
        Ok(f64::from(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<f64, E> {
        s.trim()
            .parse::<f64>()
            .map_err(|e| E::custom(format!("{s:?} is not a number: {e}")))
    }
}

/// A list given either as a sequence (TOML array, repeated flags) or as comma-separated
/// text (the environment: `GEOLOC_PROBE_TCP_PORTS=443,80`):
/// `#[serde(deserialize_with = "geoloc_rt::config::list_or_comma_separated")]`.
pub fn list_or_comma_separated<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: fmt::Display,
{
    struct ListVisitor<T>(PhantomData<T>);
    impl<'de, T> Visitor<'de> for ListVisitor<T>
    where
        T: Deserialize<'de> + FromStr,
        T::Err: fmt::Display,
    {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list or comma-separated text")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element()? {
                out.push(v);
            }
            Ok(out)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Vec<T>, E> {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<T>().map_err(|e| E::custom(format!("{p:?}: {e}"))))
                .collect()
        }
    }
    d.deserialize_any(ListVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Flags {
        max_ttl: Option<u8>,
        ping_count: Option<u32>,
        name: Option<String>,
        on: Option<bool>,
        ports: Option<Vec<u16>>,
        wait_ms: Option<u64>,
        lat: Option<f64>,
        rate: Option<f64>,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    struct Effective {
        max_ttl: u8,
        ping_count: u32,
        name: Option<String>,
        on: bool,
        #[serde(deserialize_with = "list_or_comma_separated")]
        ports: Vec<u16>,
        #[serde(rename = "wait-ms", with = "duration_ms")]
        wait: Duration,
        #[serde(default, deserialize_with = "float_opt")]
        lat: Option<f64>,
        #[serde(deserialize_with = "float")]
        rate: f64,
    }

    impl Default for Effective {
        fn default() -> Self {
            Effective {
                max_ttl: 30,
                ping_count: 5,
                name: None,
                on: false,
                ports: vec![443, 80],
                wait: Duration::from_millis(200),
                lat: None,
                rate: 200.0,
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn layers(flags: &Flags, file: &Flags, e: &HashMap<String, String>) -> Layers {
        Layers::new("T_", &Effective::default())
            .and_then(|l| l.file("t.toml", file))
            .and_then(|l| l.env(e))
            .and_then(|l| l.flags(flags))
            .unwrap()
    }

    #[test]
    fn flag_over_env_over_file_over_default_and_origins() {
        let file: Flags = toml::from_str("max-ttl = 20\nping-count = 7\nname = \"f\"").unwrap();
        let flags = Flags {
            max_ttl: Some(10),
            ..Default::default()
        };
        let e = env(&[
            ("T_MAX_TTL", "15"),
            ("T_PING_COUNT", "9"),
            ("T_UNKNOWN", "x"),
            ("T_WAIT_MS", ""),
            ("OTHER", "1"),
        ]);
        let l = layers(&flags, &file, &e);
        let c: Effective = l.extract().unwrap();
        assert_eq!((c.max_ttl, c.ping_count), (10, 9));
        assert_eq!(c.name.as_deref(), Some("f"));
        assert_eq!(
            c.wait,
            Duration::from_millis(200),
            "empty env value is unset"
        );
        assert_eq!(l.origin("max-ttl"), "--max-ttl on the command line");
        assert_eq!(l.origin("ping-count"), "T_PING_COUNT in the environment");
        assert_eq!(l.origin("name"), "name in file t.toml");
        assert_eq!(l.origin("ports"), "the default of ports");
        let err = l.invalid("ping-count", "ping-count 9 is odd").to_string();
        assert_eq!(
            err,
            "ping-count 9 is odd (set by T_PING_COUNT in the environment)"
        );
    }

    #[test]
    fn environment_text_is_read_leniently() {
        let e = env(&[
            ("T_ON", "yes"),
            ("T_PORTS", "8443, 8080"),
            ("T_NAME", "12345"),
            ("T_WAIT_MS", "1500"),
            ("T_LAT", "-33.86"),
            ("T_RATE", " 12.5 "),
        ]);
        let c: Effective = layers(&Flags::default(), &Flags::default(), &e)
            .extract()
            .unwrap();
        assert!(c.on);
        assert_eq!(c.ports, vec![8443, 8080]);
        assert_eq!(
            c.name.as_deref(),
            Some("12345"),
            "digits stay text for a string"
        );
        assert_eq!(c.wait, Duration::from_millis(1500));
        assert_eq!(c.lat, Some(-33.86), "exactly, not via f32");
        assert_eq!(c.rate, 12.5);
        let file: Flags = toml::from_str("lat = 48.8566\nrate = 7").unwrap();
        let c: Effective = layers(&Flags::default(), &file, &env(&[]))
            .extract()
            .unwrap();
        assert_eq!((c.lat, c.rate), (Some(48.8566), 7.0));
    }

    #[test]
    fn wrong_types_name_the_key_as_spelt_by_its_layer() {
        let err = layers(
            &Flags::default(),
            &Flags::default(),
            &env(&[("T_MAX_TTL", "300")]),
        )
        .extract::<Effective>()
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"T_MAX_TTL\" in the environment"), "{err}");
        let err = layers(
            &Flags::default(),
            &Flags::default(),
            &env(&[("T_PORTS", "80,http")]),
        )
        .extract::<Effective>()
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"http\"") && err.contains("T_PORTS"), "{err}");
        let err = layers(
            &Flags::default(),
            &Flags::default(),
            &env(&[("T_ON", "maybe")]),
        )
        .extract::<Effective>()
        .unwrap_err()
        .to_string();
        assert!(err.contains("T_ON"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn toml_of_the_effective_configuration() {
        let text = to_toml(&Effective::default()).unwrap();
        assert_eq!(
            text,
            "max-ttl = 30\nping-count = 5\non = false\nports = [443, 80]\nwait-ms = 200\nrate = 200.0\n"
        );
    }
}
