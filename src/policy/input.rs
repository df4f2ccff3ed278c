//! Request-content rules: forbidden input patterns.

use regex::RegexSet;

use crate::providers::Node;

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
    /// The same patterns in multi-line mode, searched once over the content's strings joined
    /// by `\n`: where it finds nothing no string holds a match, so the search per string is
    /// skipped (a match in a string is one in the joined text: `^` and `$` hold at a `\n` as at
    /// a string's edge, and `\n` is no word character). `None` when a pattern anchors at the
    /// very start or end of the text (`\A`, `\z`, `(?-m)^`), where that does not hold.
    joined: Option<RegexSet>,
    /// No pattern asserts a line's or the text's start or end (`^`, `$`, `\A`, `\z`): then a
    /// search of the document's text and its unescaped strings ([`Doc::text`],
    /// [`Doc::unescaped`]) stands in for the walk. Every string appears verbatim in one of the
    /// two, next to a quote or a `\n` — no word characters, as a string's edges are to `\b` —
    /// so no match there is no match in any string; keys, settings and JSON punctuation only
    /// add matches, which the walk then settles.
    ///
    /// [`Doc::text`]: crate::providers::Doc::text
    /// [`Doc::unescaped`]: crate::providers::Doc::unescaped
    raw: bool,
    ids: Vec<String>,
}

// === impl ForbiddenInput ===

impl ForbiddenInput {
    /// Compile `patterns` (as config validation does: [`forbidden_input_set`]); plain strings
    /// match literally. The error names the pattern index.
    pub fn new(patterns: &[ForbiddenPattern]) -> Result<Self, (usize, String)> {
        let set = forbidden_input_set(patterns)?;
        let (joined, raw) = match &set {
            Some(_) => {
                let sources = forbidden_input_sources(patterns)?;
                (joined_set(&sources), sources.iter().all(|s| no_edges(s)))
            }
            None => (None, false),
        };
        Ok(Self {
            set,
            joined,
            raw,
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
        if self.raw {
            // Two searches of text as it lies in memory: no walk, no copy.
            let d = doc.document();
            if !set.is_match(d.text()) && !set.is_match(d.unescaped()) {
                return None;
            }
        } else if let Some(joined) = &self.joined {
            // One search over all the strings instead of one per string (each has a fixed
            // cost in the regex engine: most of this check on a long conversation).
            let mut text = String::with_capacity(doc.document_len().min(1 << 20));
            for key in CONTENT_KEYS {
                if let Some(v) = doc.get(key) {
                    walk_strings(v, &mut |s| {
                        text.push_str(s);
                        text.push('\n');
                    });
                }
            }
            if !joined.is_match(&text) {
                return None;
            }
        }
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

/// [`ForbiddenInput::joined`]: `sources` in multi-line mode, or `None` when one of them looks
/// at the very start or end of the text (or does not build).
fn joined_set(sources: &[String]) -> Option<RegexSet> {
    use regex_syntax::hir::Look;
    let multi: Vec<String> = sources.iter().map(|s| format!("(?m:{s})")).collect();
    for src in &multi {
        let looks = looks(src)?;
        if looks.contains(Look::Start) || looks.contains(Look::End) {
            return None;
        }
    }
    RegexSet::new(&multi).ok()
}

/// [`ForbiddenInput::raw`] for one pattern: it asserts no line's or text's start or end.
fn no_edges(source: &str) -> bool {
    use regex_syntax::hir::Look;
    let Some(looks) = looks(source) else {
        return false;
    };
    ![
        Look::Start,
        Look::End,
        Look::StartLF,
        Look::EndLF,
        Look::StartCRLF,
        Look::EndCRLF,
    ]
    .into_iter()
    .any(|l| looks.contains(l))
}

/// The assertions a pattern makes (`None`: it does not parse).
fn looks(source: &str) -> Option<regex_syntax::hir::LookSet> {
    let hir = regex_syntax::Parser::new().parse(source).ok()?;
    Some(hir.properties().look_set())
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

    /// `find` with the search of the raw text, the joined search and neither: the same answer.
    fn both(patterns: &[ForbiddenPattern], doc: &serde_json::Value) -> Option<String> {
        let fast = ForbiddenInput::new(patterns).unwrap();
        let joined = ForbiddenInput {
            raw: false,
            ..ForbiddenInput::new(patterns).unwrap()
        };
        let slow = ForbiddenInput {
            joined: None,
            raw: false,
            ..ForbiddenInput::new(patterns).unwrap()
        };
        let d = Doc::of(doc);
        let (a, b, c) = (
            fast.find(d.root()),
            joined.find(d.root()),
            slow.find(d.root()),
        );
        assert_eq!(a, c, "{patterns:?} on {doc}");
        assert_eq!(b, c, "{patterns:?} on {doc}");
        a.map(str::to_string)
    }

    #[test]
    fn the_joined_search_finds_what_the_search_per_string_finds() {
        let msgs = |texts: &[&str]| {
            let m: Vec<_> = texts
                .iter()
                .map(|t| json!({"role": "user", "content": t}))
                .collect();
            json!({"model": "m", "messages": m})
        };
        let key = "AKIAABCDEFGHIJKLMNOP";
        let doc = msgs(&["hello", key, "bye"]);
        // Anchors hold at a string's edges in the middle of the conversation.
        for re in [
            r"^AKIA[0-9A-Z]{16}$",
            r"\bAKIA[0-9A-Z]{16}\b",
            r"^AKIA",
            r"OP$",
        ] {
            let p = [pat("k", None, Some(re), false)];
            assert!(ForbiddenInput::new(&p).unwrap().joined.is_some(), "{re}");
            let anchored = re.contains('^') || re.contains('$');
            assert_eq!(ForbiddenInput::new(&p).unwrap().raw, !anchored, "{re}");
            assert_eq!(both(&p, &doc).as_deref(), Some("k"), "{re}");
        }
        // Without anchors the document's text is searched as it lies: word boundaries hold at
        // a string's quotes as at its edges.
        for re in [
            r"\bAKIA[0-9A-Z]{16}\b",
            r"\BKIA",
            r"(?i)akia",
            r"\b{start}AKIA",
        ] {
            let p = [pat("k", None, Some(re), false)];
            assert!(ForbiddenInput::new(&p).unwrap().raw, "{re}");
            assert_eq!(both(&p, &doc).as_deref(), Some("k"), "{re}");
        }
        // A match in keys, settings or JSON punctuation only is none.
        for re in [r"role", r#"":""#, r"hello\W+AKIA", r"model.*m"] {
            let p = [pat("k", None, Some(re), false)];
            assert!(ForbiddenInput::new(&p).unwrap().raw, "{re}");
            assert_eq!(both(&p, &doc), None, "{re}");
        }
        // A string with escapes is searched unescaped, alone.
        let esc = msgs(&["say \"AKIAABCDEFGHIJKLMNOP\"\n", "\tAKIAABCDEFGHIJKLMNOP"]);
        for re in [
            r#""AKIA[0-9A-Z]{16}""#,
            r#"OP"\n"#,
            r"\tAKIA",
            r"\bAKIA\w+OP\b",
        ] {
            let p = [pat("k", None, Some(re), false)];
            assert!(ForbiddenInput::new(&p).unwrap().raw, "{re}");
            assert_eq!(both(&p, &esc).as_deref(), Some("k"), "{re}");
        }
        for re in [r"\n\n\tAKIA", r"OP\n$", r"OP\n\n"] {
            let p = [pat("k", None, Some(re), false)];
            assert_eq!(both(&p, &esc), None, "across two escaped strings: {re}");
        }
        // Patterns that look at the text's very start or end are searched per string.
        for re in [r"\AAKIA", r"OP\z", r"(?-m)^AKIA"] {
            let p = [pat("k", None, Some(re), false)];
            assert!(ForbiddenInput::new(&p).unwrap().joined.is_none(), "{re}");
            assert_eq!(both(&p, &doc).as_deref(), Some("k"), "{re}");
        }
        // A match only across two strings is none.
        let p = [pat("k", None, Some(r"hello\sAKIA"), false)];
        assert_eq!(both(&p, &doc), None);
        let p = [pat("k", None, Some(r"(?s)lo.AK"), false)];
        assert_eq!(both(&p, &doc), None);
        // Escaped text is searched unescaped; settings are not content.
        let doc = json!({"model": key, "messages": [{"role": "user", "content": format!("a\n{key}\"b")}]});
        let p = [pat("k", None, Some(r"^AKIA[0-9A-Z]{16}$"), false)];
        assert_eq!(both(&p, &doc), None, "mid-string, not at a line start");
        let p = [pat("k", None, Some(r"(?m)^AKIA[0-9A-Z]{16}"), false)];
        assert_eq!(both(&p, &doc).as_deref(), Some("k"));
        // The first in config order wins, whichever string holds it.
        let doc = msgs(&["project nightingale", key]);
        let p = [
            pat("aws", None, Some("AKIA[0-9A-Z]{16}"), false),
            pat("bird", Some("NIGHTINGALE"), None, true),
        ];
        assert_eq!(both(&p, &doc).as_deref(), Some("aws"));
        assert_eq!(both(&p, &msgs(&["nothing here"])), None);
    }

    proptest::proptest! {
        #[test]
        fn the_joined_search_agrees_on_arbitrary_strings(
            texts in proptest::collection::vec("[a-c\\n \"]{0,6}", 0..5),
            re in proptest::sample::select(vec![
                "^a", "a$", "^a$", "\\ba\\b", "\\Ba", "ab", "a\\nb", "(?s)a.b", "^$", "c\\s+a",
                "(?m)^b", "\\Ab", "c\\z", "(?-m:^c)", "a\\b",
                "a\"", "\":\"", "[^a]a", "\\Wc", "role", "user\\b",
            ]),
        ) {
            let m: Vec<_> = texts.iter().map(|t| json!({"role": "user", "content": t})).collect();
            both(&[pat("p", None, Some(re), false)], &json!({"messages": m}));
        }
    }
}
