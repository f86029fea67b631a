//! `--set key.path=value` overrides applied to the JSON of a config before it is typed.
//!
//! The value is parsed as JSON (`3`, `true`, `[5, 25]`, `{"a": 1}`, `null`), and taken as a
//! string otherwise (`name=my-run`). Missing intermediate objects are created; whether a key
//! exists is then decided by the typed config (`deny_unknown_fields`), so a misspelt key is
//! an error, never silently ignored.
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// Applies one `key.path=value` override to `root`.
pub fn apply(root: &mut Value, assignment: &str) -> Result<()> {
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("--set `{assignment}`: expected key=value")))?;
    let path = path.trim();
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(TrainError::Config(format!(
            "--set `{assignment}`: empty key component"
        )));
    }
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut node = root;
    let keys: Vec<&str> = path.split('.').collect();
    for (i, key) in keys.iter().enumerate() {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else {
            return Err(TrainError::Config(format!(
                "--set `{assignment}`: `{}` is not an object",
                keys[..i].join(".")
            )));
        };
        if i + 1 == keys.len() {
            map.insert(key.to_string(), value);
            return Ok(());
        }
        node = map.entry(key.to_string()).or_insert(Value::Null);
    }
    unreachable!("the loop returns at the last key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_json_and_string_values() {
        let mut v = json!({"a": {"b": 1}, "name": "x"});
        apply(&mut v, "a.b=2.5").unwrap();
        apply(&mut v, "a.c.d=[1, 2]").unwrap();
        apply(&mut v, "name=run-7").unwrap();
        apply(&mut v, "flag=true").unwrap();
        assert_eq!(
            v,
            json!({"a": {"b": 2.5, "c": {"d": [1, 2]}}, "name": "run-7", "flag": true})
        );
    }

    #[test]
    fn bad_assignments_are_errors() {
        let mut v = json!({"a": 1});
        assert!(apply(&mut v, "a.b=1").is_err(), "a is not an object");
        assert!(apply(&mut v, "noequals").is_err());
        assert!(apply(&mut v, "a..b=1").is_err());
    }
}
