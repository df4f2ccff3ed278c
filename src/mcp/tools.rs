//! `tools/list` results: the tools a server declares (name and `inputSchema`, remembered for
//! argument validation) and the list with the tools an agent may not use taken out.
//!
//! A result is recognised by its shape — a response whose `result.tools` is an array — not by
//! the id of the request it answers: a stream resumed with `Last-Event-ID` replays answers to
//! requests made on another connection, and those must be filtered too.

use serde_json::Value;

/// One tool a server declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// The tool's name.
    pub name: String,
    /// Its `inputSchema` (`Null` when it declared none).
    pub input_schema: Value,
}

/// What the `tools/list` results of one server message held.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Listing {
    /// Every tool declared, before filtering.
    pub declared: Vec<Declared>,
    /// Names of the tools taken out.
    pub removed: Vec<String>,
}

/// Read the `tools/list` results in `doc` (one message or a batch) and take out the tools
/// `keep` refuses. `None` when `doc` holds no `tools/list` result.
pub fn filter(doc: &mut Value, keep: &dyn Fn(&str) -> bool) -> Option<Listing> {
    let mut listing = None;
    match doc {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|m| filter_one(m, keep, &mut listing)),
        m => filter_one(m, keep, &mut listing),
    }
    listing
}

fn filter_one(msg: &mut Value, keep: &dyn Fn(&str) -> bool, out: &mut Option<Listing>) {
    if msg.get("method").is_some() {
        return; // a request or notification, not a result
    }
    let Some(Value::Array(tools)) = msg.get_mut("result").and_then(|r| r.get_mut("tools")) else {
        return;
    };
    let listing = out.get_or_insert_with(Listing::default);
    tools.retain(|t| {
        // A tool without a name cannot be called: it is left for the client to refuse.
        let Some(name) = t.get("name").and_then(Value::as_str) else {
            return true;
        };
        listing.declared.push(Declared {
            name: name.to_string(),
            input_schema: t.get("inputSchema").cloned().unwrap_or(Value::Null),
        });
        let kept = keep(name);
        if !kept {
            listing.removed.push(name.to_string());
        }
        kept
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn denied_tools_are_taken_out_and_every_schema_is_read() {
        let mut doc = json!({"jsonrpc":"2.0","id":2,"result":{"tools":[
            {"name":"add","inputSchema":{"type":"object"}},
            {"name":"delete_all","inputSchema":{"type":"object","properties":{}}},
            {"title":"nameless"}
        ],"nextCursor":"c"}});
        let l = filter(&mut doc, &|n| n != "delete_all").unwrap();
        assert_eq!(l.removed, ["delete_all"]);
        assert_eq!(l.declared.len(), 2);
        assert_eq!(l.declared[0].input_schema, json!({"type":"object"}));
        let names: Vec<_> = doc["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.get("name").cloned())
            .collect();
        assert_eq!(names, [Some(json!("add")), None]);
        assert_eq!(doc["result"]["nextCursor"], "c", "the rest is kept");
    }

    #[test]
    fn other_messages_are_no_listing() {
        let mut call = json!({"jsonrpc":"2.0","id":3,"result":{"content":[]}});
        assert!(filter(&mut call, &|_| false).is_none());
        let mut req = json!({"jsonrpc":"2.0","method":"x","result":{"tools":[]}});
        assert!(filter(&mut req, &|_| false).is_none());
        let mut batch = json!([{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}]);
        assert_eq!(filter(&mut batch, &|_| true).unwrap().removed.len(), 0);
    }
}
