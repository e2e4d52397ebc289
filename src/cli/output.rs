//! Records as `key=value` lines for scripts, or JSON lines with `--json`, and the one
//! way every command prints the phone's events.

use hush_core::AccountConfig;
use serde_json::Value;

/// Prints records as `key=value` lines or JSON lines.
pub(crate) struct Out {
    pub(crate) json: bool,
}

impl Out {
    pub(crate) fn record(&self, kind: &str, fields: &[(&str, Value)]) {
        if self.json {
            let mut map = serde_json::Map::new();
            map.insert("type".into(), kind.into());
            for (k, v) in fields {
                map.insert((*k).into(), v.clone());
            }
            println!("{}", Value::Object(map));
        } else {
            let mut line = kind.to_owned();
            for (k, v) in fields {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '"') {
                    line.push_str(&format!(" {k}={text:?}"));
                } else {
                    line.push_str(&format!(" {k}={text}"));
                }
            }
            println!("{line}");
        }
    }

    pub(crate) fn account(&self, a: &AccountConfig) {
        let mut fields = vec![
            ("id", a.id.0.into()),
            ("protocol", a.protocol().as_str().into()),
            ("address", a.address.clone().into()),
            ("remember_password", a.remember_password.into()),
        ];
        if let Some(n) = &a.display_name {
            fields.push(("name", n.clone().into()));
        }
        self.record("account", &fields);
    }
}
