//! Request-content rules: forbidden input patterns.

use regex::RegexSet;
use serde_json::Value;

use crate::config::{forbidden_input_set, forbidden_input_sources, ForbiddenPattern};

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
    /// Bytes the shortest match of any pattern takes: shorter strings (roles, types, ids) are
    /// not searched.
    min_len: usize,
}

// === impl ForbiddenInput ===

impl ForbiddenInput {
    /// Compile `patterns` (as config validation does: [`forbidden_input_set`]); plain strings
    /// match literally. The error names the pattern index.
    pub fn new(patterns: &[ForbiddenPattern]) -> Result<Self, (usize, String)> {
        let set = forbidden_input_set(patterns)?;
        let min_len = forbidden_input_sources(patterns)?
            .iter()
            .map(|src| shortest_match(src))
            .min()
            .unwrap_or(0);
        Ok(Self {
            set,
            ids: patterns.iter().map(|p| p.id.clone()).collect(),
            min_len,
        })
    }

    /// Whether there is anything to look for.
    pub fn is_empty(&self) -> bool {
        self.set.is_none()
    }

    /// The id of the first pattern (in config order) found in the request's content.
    pub fn find(&self, doc: &Value) -> Option<&str> {
        let set = self.set.as_ref()?;
        let mut first: Option<usize> = None;
        for key in CONTENT_KEYS {
            if let Some(v) = doc.get(key) {
                walk_strings(v, &mut |s| {
                    if s.len() < self.min_len {
                        return;
                    }
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

/// The fewest bytes a match of the regex `src` takes (0 when that cannot be told): the regex
/// crate's own parser, so the length is the one the compiled set matches with.
fn shortest_match(src: &str) -> usize {
    match regex_syntax::Parser::new().parse(src) {
        // `None`: the pattern matches nothing, whatever the length.
        Ok(hir) => hir.properties().minimum_len().unwrap_or(usize::MAX),
        Err(_) => 0,
    }
}

fn walk_strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(o) => o.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(f.find(&doc), Some("nightingale"));
        let model_only = json!({"model":"AKIAABCDEFGHIJKLMNOP","messages":[]});
        assert_eq!(f.find(&model_only), None, "settings are not content");
        let gem = json!({"contents":[{"parts":[{"text":"AKIAABCDEFGHIJKLMNOP"}]}]});
        assert_eq!(f.find(&gem), Some("aws_key"));
    }

    #[test]
    fn strings_shorter_than_every_match_are_skipped_and_the_rest_still_match() {
        let f = ForbiddenInput::new(&[
            pat("key", None, Some(r"AKIA[0-9A-Z]{16}"), false),
            pat("word", Some("secret"), None, true),
        ])
        .unwrap();
        assert_eq!(f.min_len, 6);
        let doc = json!({"messages":[{"role":"user","content":"SECRET"}]});
        assert_eq!(
            f.find(&doc),
            Some("word"),
            "a string as long as the shortest match"
        );
        assert_eq!(f.find(&json!({"messages":[{"content":"SECRE"}]})), None);
        // Non-ASCII: lengths are bytes, as the regex matches them.
        let f = ForbiddenInput::new(&[pat("e", None, Some("é+"), false)]).unwrap();
        assert_eq!(f.min_len, 2);
        assert_eq!(f.find(&json!({"messages":[{"content":"é"}]})), Some("e"));
        let f = ForbiddenInput::new(&[pat("any", None, Some("x*"), false)]).unwrap();
        assert_eq!(f.min_len, 0);
        assert_eq!(f.find(&json!({"messages":[{"content":""}]})), Some("any"));
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
