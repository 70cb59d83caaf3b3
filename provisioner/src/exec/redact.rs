//! Redaction: secret values never reach a sink.
//!
//! [`Redacting`] wraps the run's event sink, so every producer (the runner, the session, the
//! secrets store's notices) goes through it; a new producer cannot forget it.

use std::sync::Arc;

use serde_json::Value;

use crate::exec::events::{EventSink, RunEvent};
use crate::model::inventory::Inventory;
use crate::template::Vars;

/// An [`EventSink`] that censors every event with `redactor` before passing it on.
pub struct Redacting {
    pub inner: Arc<dyn EventSink>,
    pub redactor: Arc<Redactor>,
}

impl EventSink for Redacting {
    fn emit(&self, mut event: RunEvent) {
        self.redactor.redact_event(&mut event);
        self.inner.emit(event);
    }
}

/// Replaces secret values with `********` in everything a run reports.
///
/// Secret values are those of variables whose names say so (`*password*`, `*secret*`,
/// `*token*`, `*_key` but not `*_key_file`) and `ansible_become_pass(word)`.
///
/// Values the engine generates (passwords, TLS keys) are added while the run goes with
/// [`Redactor::learn`], so they are censored whatever the variable holding them is called.
#[derive(Default)]
pub struct Redactor {
    secrets: std::sync::RwLock<Vec<String>>,
}

/// Whether a variable's name marks its value as secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    (n.contains("password")
        || n.contains("passwd")
        || n.contains("secret")
        || n.contains("token")
        || n.ends_with("_key")
        || n.contains("become_pass"))
        && !n.ends_with("_file")
        && !n.ends_with("_path")
}

impl Redactor {
    pub fn from_inventory(inv: &Inventory, extra: &Vars) -> Self {
        let mut found = Vec::new();
        for h in inv.host_names() {
            collect(&Value::Object(inv.host_vars(h)), false, &mut found);
        }
        collect(&Value::Object(extra.clone()), false, &mut found);
        let r = Redactor::default();
        r.add(found);
        r
    }

    /// Censor `value` from now on, in every event. A multi-line value (a PEM key) is also
    /// censored line by line, so a diff or an excerpt cannot show part of it. Values shorter
    /// than 4 characters are ignored (they would censor ordinary text).
    pub fn learn(&self, value: &str) {
        let mut found = vec![value.to_string()];
        if value.contains('\n') {
            found.extend(
                value
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.len() >= 16 && !l.starts_with("-----"))
                    .map(str::to_string),
            );
        }
        self.add(found);
    }

    fn add(&self, found: Vec<String>) {
        let Ok(mut secrets) = self.secrets.write() else {
            return;
        };
        for s in found {
            if s.len() >= 4 && !secrets.contains(&s) {
                secrets.push(s);
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub fn redact(&self, s: &mut String) {
        let Ok(secrets) = self.secrets.read() else {
            return;
        };
        for secret in secrets.iter() {
            if s.contains(secret.as_str()) {
                *s = s.replace(secret.as_str(), "********");
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.secrets.read().map(|s| s.is_empty()).unwrap_or(true)
    }

    pub fn redact_event(&self, e: &mut RunEvent) {
        if self.is_empty() {
            return;
        }
        match e {
            RunEvent::TaskFinished(r) => {
                if let Some(m) = &mut r.msg {
                    self.redact(m);
                }
                if let Some(i) = &mut r.item {
                    self.redact(i);
                }
                for d in &mut r.diffs {
                    self.redact(&mut d.before);
                    self.redact(&mut d.after);
                }
            }
            RunEvent::Command { command, .. } => self.redact(command),
            RunEvent::Warning { message } | RunEvent::Notice { message } => self.redact(message),
            RunEvent::Step(s) => self.redact(&mut s.message),
            _ => {}
        }
    }
}

fn collect(v: &Value, secret: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                collect(v, secret || is_secret_name(k), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect(v, secret, out)),
        Value::String(s) if secret && s.len() >= 4 && !s.contains("{{") => out.push(s.clone()),
        Value::Number(n) if secret && n.to_string().len() >= 4 => out.push(n.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod redactor_tests {
    use super::*;

    #[test]
    fn learnt_values_are_censored_whole_and_line_by_line() {
        let r = Redactor::default();
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\nAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh\n-----END PRIVATE KEY-----\n";
        r.learn(key);
        r.learn("Zq8pLm3x");
        r.learn("ab");
        let mut whole = format!("content: {key} and Zq8pLm3x, ab");
        r.redact(&mut whole);
        assert_eq!(whole, "content: ******** and ********, ab");
        let mut part = "+AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefgh\n".to_string();
        r.redact(&mut part);
        assert_eq!(part, "+********\n");
    }
}
