//! The deterministic "model output": a repeated word sequence and canned tool calls.

/// One word per streamed chunk; chunk `i` is `WORDS[i % WORDS.len()]`. No character here needs
/// JSON escaping except that " café" is multi-byte UTF-8 on purpose (one-byte writes split it).
pub(crate) const WORDS: [&str; 16] = [
    "Mock",
    " reply",
    " from",
    " the",
    " tokenwarden",
    " test",
    " provider",
    ":",
    " every",
    " token",
    " is",
    " counted",
    ",",
    " café",
    " included",
    ".",
];

/// Canned tool calls: name and JSON arguments (ASCII only, so any byte split is a char split).
pub(crate) const TOOLS: [(&str, &str); 8] = [
    ("get_weather", r#"{"city":"Paris","unit":"celsius"}"#),
    ("search_docs", r#"{"query":"token budgets","limit":5}"#),
    ("get_time", r#"{"timezone":"Europe/Paris"}"#),
    ("lookup_order", r#"{"order_id":"A-1042"}"#),
    (
        "send_email",
        r#"{"to":"ops@example.com","subject":"Daily report"}"#,
    ),
    (
        "create_ticket",
        r#"{"title":"Mock ticket","priority":"low"}"#,
    ),
    (
        "convert_currency",
        r#"{"from":"USD","to":"EUR","amount":100}"#,
    ),
    ("list_files", r#"{"path":"/tmp","recursive":false}"#),
];

/// Bytes of tool arguments per streamed fragment.
pub(crate) const FRAGMENT_LEN: usize = 6;

/// The `i`-th streamed word.
pub(crate) fn word(i: u32) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

/// The concatenation of the first `n` words.
pub(crate) fn full_text(n: u32) -> String {
    let mut s = String::with_capacity(n as usize * 8);
    for i in 0..n {
        s.push_str(word(i));
    }
    s
}

/// Name and arguments of the `i`-th tool call.
pub(crate) fn tool(i: u32) -> (&'static str, &'static str) {
    TOOLS[i as usize % TOOLS.len()]
}

/// Splits tool arguments into the fragments that are streamed (each a char-boundary slice).
pub(crate) fn fragments(args: &str) -> impl Iterator<Item = &str> {
    let mut rest = args;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = FRAGMENT_LEN.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// Number of fragments the `i`-th tool call's arguments are streamed in.
pub(crate) fn fragment_count(i: u32) -> u64 {
    let len = tool(i).1.len();
    len.div_ceil(FRAGMENT_LEN) as u64
}

/// Total argument fragments of the first `n` tool calls.
pub(crate) fn tool_fragment_total(n: u32) -> u64 {
    let per_cycle: u64 = (0..TOOLS.len() as u32).map(fragment_count).sum();
    let cycles = u64::from(n) / TOOLS.len() as u64;
    let rest: u64 = (0..n % TOOLS.len() as u32).map(fragment_count).sum();
    cycles * per_cycle + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_need_no_json_escaping() {
        for w in WORDS {
            assert!(!w.is_empty());
            assert!(!w.contains(['"', '\\']) && !w.chars().any(char::is_control));
        }
        assert_eq!(full_text(3), "Mock reply from");
        assert_eq!(full_text(17), format!("{}Mock", WORDS.concat()));
    }

    #[test]
    fn fragments_reassemble_and_are_counted() {
        for (i, (_, args)) in TOOLS.iter().enumerate() {
            assert!(args.is_ascii());
            serde_json::from_str::<serde_json::Value>(args).unwrap();
            let parts: Vec<&str> = fragments(args).collect();
            assert_eq!(parts.concat(), *args);
            assert!(parts.len() > 1);
            assert_eq!(parts.len() as u64, fragment_count(i as u32));
        }
        let manual: u64 = (0..19).map(fragment_count).sum();
        assert_eq!(tool_fragment_total(19), manual);
        assert_eq!(tool_fragment_total(0), 0);
    }

    #[test]
    fn fragments_respect_char_boundaries() {
        let parts: Vec<&str> = fragments("aaaaaé€bbbbbbbb").collect();
        assert_eq!(parts.concat(), "aaaaaé€bbbbbbbb");
    }
}
