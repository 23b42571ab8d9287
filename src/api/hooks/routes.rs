//! The configured webhook routes, compiled at start-up: each route's mapping, authentication and
//! mode, or every problem of every route at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;

use super::auth::HookAuth;
use super::mapping::Mapping;
use super::settings::{HookMode, HookSettings};
use crate::config::{ConfigError, Problem};

/// One compiled route.
pub struct HookRoute {
    pub mapping: Mapping,
    pub auth: HookAuth,
    pub mode: HookMode,
}

/// Every configured route, by name.
#[derive(Clone, Default)]
pub struct HookRoutes(Arc<BTreeMap<String, HookRoute>>);

/// Route names become URL segments and environment variable parts: keep them plain.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl HookRoutes {
    /// Every route, compiled; or every problem of every route, each at `hooks.<name>`.
    /// `sealable`: whether a key is configured to store secure attributes encrypted.
    pub fn compile(
        hooks: &BTreeMap<String, HookSettings>,
        global_keys: &[SecretString],
        sealable: bool,
    ) -> Result<Self, ConfigError> {
        let mut routes = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, settings) in hooks {
            let mut problem = |reason: String| {
                problems.push(Problem {
                    key: format!("hooks.{name}"),
                    reason,
                })
            };
            if !valid_name(name) {
                problem("a route name is lower-case letters, digits, `-` and `_`".into());
            }
            // Every request of such a route could be stored as a job, and with no key secure values
            // never are: it would refuse each one (`secure_not_stored`), so it is refused once, at
            // start-up.
            if !settings.secure_attributes.is_empty()
                && settings.mode != HookMode::Sync
                && !sealable
            {
                problem(
                    "secure_attributes are stored only encrypted, and secure.keys is empty: configure a key, or make the route's mode \"sync\"".into(),
                );
            }
            let mapping = Mapping::compile(settings).map_err(&mut problem);
            let auth = HookAuth::compile(settings.auth.as_ref(), global_keys)
                .map_err(|reason| problem(format!("auth: {reason}")));
            if let (Ok(mapping), Ok(auth)) = (mapping, auth) {
                routes.insert(
                    name.clone(),
                    HookRoute {
                        mapping,
                        auth,
                        mode: settings.mode,
                    },
                );
            }
        }
        if problems.is_empty() {
            Ok(Self(Arc::new(routes)))
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Every route, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &HookRoute)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&HookRoute> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}
