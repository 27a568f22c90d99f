//! Kubernetes label selectors: the structured form of policies (`matchLabels`,
//! `matchExpressions`) and the string form of kustomize patch targets (`app=web,tier in (a,b)`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// The label's value is one of the values.
    In,
    /// The label is missing or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is missing.
    DoesNotExist,
}

/// One requirement of a selector; all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// How the key's value is compared.
    pub operator: Operator,
    /// Values for `In` / `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// `metav1.LabelSelector`: an empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Exact label values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every part of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// A string selector that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}: {problem}")]
pub struct LabelSelectorError {
    /// The selector as written.
    pub selector: String,
    /// What is wrong.
    pub problem: String,
}

/// A parsed string selector: a conjunction of requirements (`NotEquals` is `NotIn` of one).
pub type Requirements = Vec<Requirement>;

/// Parses the string form used by `kubectl -l` and kustomize targets:
/// `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas.
///
/// ```
/// use flotilla::labels::{matches_all, parse_label_selector};
/// let selector = parse_label_selector("app=web,tier in (a, b)").unwrap();
/// let labels = [("app".to_string(), "web".to_string()), ("tier".to_string(), "b".to_string())].into();
/// assert!(matches_all(&selector, &labels));
/// ```
pub fn parse_label_selector(selector: &str) -> Result<Requirements, LabelSelectorError> {
    let error = |problem: &str| LabelSelectorError {
        selector: selector.to_string(),
        problem: problem.to_string(),
    };
    let mut requirements = Vec::new();
    for term in split_terms(selector) {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let requirement = if let Some(key) = term.strip_prefix('!') {
            Requirement {
                key: key.trim().to_string(),
                operator: Operator::DoesNotExist,
                values: vec![],
            }
        } else if let Some((key, value)) = term.split_once("!=") {
            Requirement {
                key: key.trim().to_string(),
                operator: Operator::NotIn,
                values: vec![value.trim().to_string()],
            }
        } else if let Some((key, value)) = term.split_once('=') {
            let value = value.strip_prefix('=').unwrap_or(value);
            Requirement {
                key: key.trim().to_string(),
                operator: Operator::In,
                values: vec![value.trim().to_string()],
            }
        } else if let Some((key, rest)) = term.split_once(' ') {
            let rest = rest.trim();
            let (operator, list) = if let Some(list) = rest.strip_prefix("notin") {
                (Operator::NotIn, list)
            } else if let Some(list) = rest.strip_prefix("in") {
                (Operator::In, list)
            } else {
                return Err(error("expected `in` or `notin` after the key"));
            };
            let list = list
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| error("expected a parenthesised list of values"))?;
            Requirement {
                key: key.trim().to_string(),
                operator,
                values: list.split(',').map(|v| v.trim().to_string()).collect(),
            }
        } else {
            Requirement {
                key: term.to_string(),
                operator: Operator::Exists,
                values: vec![],
            }
        };
        if requirement.key.is_empty() {
            return Err(error("empty key"));
        }
        // As Kubernetes' `labels.Parse` (kustomize's too): a key that is not a label key, or a
        // value that is not a label value, is an error, not a selector that matches nothing.
        if !is_label_key(&requirement.key) {
            return Err(error(&format!("{:?} is not a label key", requirement.key)));
        }
        if let Some(value) = requirement.values.iter().find(|v| !is_label_value(v)) {
            return Err(error(&format!("{value:?} is not a label value")));
        }
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and ending
/// with a letter or digit.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a non-empty label value.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|prefix| {
        prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// Splits on commas that are not inside a parenthesised value list.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Whether `labels` satisfy all `requirements`.
pub fn matches_all(requirements: &[Requirement], labels: &BTreeMap<String, String>) -> bool {
    requirements.iter().all(|r| r.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_selectors_cover_every_operator() {
        let reqs = parse_label_selector("app=web, tier in (a, b),env!=dev,team,!legacy").unwrap();
        assert_eq!(reqs.len(), 5);
        assert!(matches_all(
            &reqs,
            &labels(&[("app", "web"), ("tier", "b"), ("team", "x")])
        ));
        assert!(!matches_all(
            &reqs,
            &labels(&[("app", "web"), ("tier", "c"), ("team", "x")])
        ));
        assert!(!matches_all(
            &reqs,
            &labels(&[
                ("app", "web"),
                ("tier", "a"),
                ("team", "x"),
                ("legacy", "1")
            ])
        ));
        let notin = parse_label_selector("tier notin (a)").unwrap();
        assert!(matches_all(&notin, &labels(&[])));
        assert!(parse_label_selector("tier within (a)").is_err());
    }

    #[test]
    fn structured_selector_ands_labels_and_expressions() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "gpu", "operator": "Exists"}]
        }))
        .unwrap();
        assert!(selector.matches(&labels(&[("env", "prod"), ("gpu", "a100")])));
        assert!(!selector.matches(&labels(&[("env", "prod")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn keys_and_values_that_are_not_labels_are_refused_as_kubernetes_does() {
        for selector in [
            "!!!===",
            "a b=c",
            "app=x y",
            "app in (ok, -bad)",
            "Bad_Prefix/app=x",
        ] {
            assert!(parse_label_selector(selector).is_err(), "{selector}");
        }
        for selector in [
            "app.kubernetes.io/name=web,tier!=db",
            "!canary",
            "env in (a, b.c-d_e)",
            "x=",
        ] {
            assert!(parse_label_selector(selector).is_ok(), "{selector}");
        }
    }
}
