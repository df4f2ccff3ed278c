//! Request-content rules: forbidden input patterns.

use regex::RegexSet;

use crate::providers::Node;

use crate::config::{forbidden_input_set, ForbiddenPattern};

/// Keys whose subtrees are request content (the conversation, not settings or tool schemas).
const CONTENT_KEYS: [&str; 7] = [
    "messages",
    "input",
    "system",
    "instructions",
    "contents",
    "systemInstruction",
    "prompt",
];

/// The forbidden patterns of one agent, compiled into one set.
#[derive(Debug, Default)]
pub struct ForbiddenInput {
    set: Option<RegexSet>,
    ids: Vec<String>,
}

// === impl ForbiddenInput ===

impl ForbiddenInput {
    /// Compile `patterns` (as config validation does: [`forbidden_input_set`]); plain strings
    /// match literally. The error names the pattern index.
    pub fn new(patterns: &[ForbiddenPattern]) -> Result<Self, (usize, String)> {
        Ok(Self {
            set: forbidden_input_set(patterns)?,
            ids: patterns.iter().map(|p| p.id.clone()).collect(),
        })
    }

    /// Whether there is anything to look for.
    pub fn is_empty(&self) -> bool {
        self.set.is_none()
    }

    /// The id of the first pattern (in config order) found in the request's content.
    pub fn find(&self, doc: Node<'_>) -> Option<&str> {
        let set = self.set.as_ref()?;
        let mut first: Option<usize> = None;
        for key in CONTENT_KEYS {
            if let Some(v) = doc.get(key) {
                walk_strings(v, &mut |s| {
                    // Nearly every string matches nothing: `is_match` stops at the first match
                    // and needs no per-pattern bookkeeping; only a hit asks which pattern.
                    if !set.is_match(s) {
                        return;
                    }
                    if let Some(i) = set.matches(s).iter().next() {
                        first = Some(first.map_or(i, |f| f.min(i)));
                    }
                });
            }
        }
        first.and_then(|i| self.ids.get(i)).map(String::as_str)
    }
}

fn walk_strings(v: Node<'_>, f: &mut impl FnMut(&str)) {
    if let Some(s) = v.as_str() {
        f(s);
    } else if let Some(items) = v.items() {
        items.for_each(|x| walk_strings(x, f));
    } else if let Some(entries) = v.entries() {
        entries.for_each(|(_, x)| walk_strings(x, f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Doc;
    use serde_json::json;

    fn pat(id: &str, contains: Option<&str>, regex: Option<&str>, ci: bool) -> ForbiddenPattern {
        ForbiddenPattern {
            id: id.into(),
            contains: contains.map(Into::into),
            regex: regex.map(Into::into),
            case_insensitive: ci,
        }
    }

    #[test]
    fn finds_the_first_pattern_in_content_only() {
        let f = ForbiddenInput::new(&[
            pat("nightingale", Some("Project Nightingale"), None, true),
            pat("aws_key", None, Some(r"AKIA[0-9A-Z]{16}"), false),
        ])
        .unwrap();
        let doc = json!({"model":"AKIAABCDEFGHIJKLMNOP","messages":[{"role":"user","content":[{"type":"text","text":"key AKIAABCDEFGHIJKLMNOP and project nightingale."}]}]});
        assert_eq!(f.find(Doc::of(&doc).root()), Some("nightingale"));
        let model_only = json!({"model":"AKIAABCDEFGHIJKLMNOP","messages":[]});
        assert_eq!(
            f.find(Doc::of(&model_only).root()),
            None,
            "settings are not content"
        );
        let gem = json!({"contents":[{"parts":[{"text":"AKIAABCDEFGHIJKLMNOP"}]}]});
        assert_eq!(f.find(Doc::of(&gem).root()), Some("aws_key"));
    }

    #[test]
    fn bad_patterns_are_named() {
        assert_eq!(
            ForbiddenInput::new(&[pat("a", None, None, false)])
                .unwrap_err()
                .0,
            0
        );
        let e = ForbiddenInput::new(&[
            pat("a", Some("x"), None, false),
            pat("b", None, Some("("), false),
        ])
        .unwrap_err();
        assert_eq!(e.0, 1);
        assert!(ForbiddenInput::new(&[]).unwrap().is_empty());
    }
}
