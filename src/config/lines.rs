//! Where a key path (`budgets.limits[0].warn_at`) sits in config text, so that a value error
//! names its line as a syntax error does. Read from the YAML parser's events, not the text, so
//! flow style (`{ a: 1 }`) and comments cannot mislead it.

use serde_saphyr::granit_parser::{Event, Parser};

/// The node a path has reached, as the walk descends.
enum Frame {
    /// A mapping: `key` is the key whose value comes next, `None` while a key is expected.
    Map { path: String, key: Option<String> },
    /// A sequence: `next` is the index of its next item.
    Seq { path: String, next: usize },
}

/// The 1-based line of the key (or sequence item) at `path` in `text`, if the text holds it.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let mut stack: Vec<Frame> = Vec::new();
    for ev in Parser::new_from_str(text) {
        let (event, span) = ev.ok()?;
        // The path of the node this event starts, when it starts one (and is not a map key).
        let node = match stack.last_mut() {
            Some(Frame::Map { path: p, key }) => match (key.take(), &event) {
                (None, Event::Scalar(k, ..)) => {
                    let at = join(p, k);
                    if at == path {
                        return Some(span.start.line());
                    }
                    *key = Some(at);
                    continue;
                }
                (None, _) => None, // a complex key: nothing to name
                (Some(at), _) => Some(at),
            },
            Some(Frame::Seq { path: p, next }) => {
                let at = format!("{p}[{next}]");
                *next += 1;
                Some(at)
            }
            None => Some(String::new()),
        };
        match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let at = node.unwrap_or_default();
                if !at.is_empty() && at == path {
                    return Some(span.start.line());
                }
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Map {
                        path: at,
                        key: None,
                    },
                    _ => Frame::Seq { path: at, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(..) | Event::Alias(..) if node.as_deref() == Some(path) => {
                return Some(span.start.line());
            }
            _ => {}
        }
    }
    None
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn keys_items_and_flow_style_are_found_by_path() {
        let text = "# comment\nroutes:\n  - name: a\n    upstream: http://x\n  - name: b\n    upstream: http://y\nbudgets:\n  limits:\n    - { scope: session, tokens: 10, warn_at: 2 }\nagents:\n  bot.v2:\n    max_steps: 3\n";
        assert_eq!(line_of(text, "routes"), Some(2));
        assert_eq!(line_of(text, "routes[1]"), Some(5));
        assert_eq!(line_of(text, "routes[1].upstream"), Some(6));
        assert_eq!(line_of(text, "budgets.limits[0].warn_at"), Some(9));
        assert_eq!(line_of(text, "agents.bot.v2.max_steps"), Some(12));
        assert_eq!(line_of(text, "routes[2]"), None);
        assert_eq!(line_of(text, "nope"), None);
        assert_eq!(line_of("a: [", "a"), Some(1));
    }
}
