//! What a Bedrock Runtime path says: `/model/{modelId}/{operation}`, the model id
//! percent-encoded when it is an ARN or a profile (`%3A`, `%2F`).

use percent_encoding::percent_decode_str;

/// A Bedrock Runtime operation on a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `converse`.
    Converse,
    /// `converse-stream`.
    ConverseStream,
    /// `invoke`.
    Invoke,
    /// `invoke-with-response-stream`.
    InvokeStream,
    /// `count-tokens`: a count, never billed.
    CountTokens,
}

/// The model id and operation of a path, when it is one.
fn split(path: &str) -> Option<(&str, Op)> {
    let rest = &path[path.find("/model/")? + "/model/".len()..];
    let (model, op) = rest.rsplit_once('/')?;
    let op = match op {
        "converse" => Op::Converse,
        "converse-stream" => Op::ConverseStream,
        "invoke" => Op::Invoke,
        "invoke-with-response-stream" => Op::InvokeStream,
        "count-tokens" => Op::CountTokens,
        _ => return None,
    };
    (!model.is_empty()).then_some((model, op))
}

/// The operation a path names.
pub(super) fn operation(path: &str) -> Option<Op> {
    split(path).map(|(_, op)| op)
}

/// The model id a path names, decoded.
pub(super) fn model(path: &str) -> Option<String> {
    let (model, _) = split(path)?;
    Some(percent_decode_str(model).decode_utf8_lossy().into_owned())
}

/// Bedrock's cross-region inference profiles name their geography first.
const GEOS: [&str; 8] = ["us", "us-gov", "eu", "apac", "jp", "au", "ca", "global"];

/// The model's own name inside a Bedrock model id `[geo.]vendor.name[-vN][:M[:ctx]]`
/// (`us.anthropic.claude-sonnet-4-5-20250929-v1:0` → `claude-sonnet-4-5-20250929`,
/// `meta.llama3-1-70b-instruct-v1:0` → `llama3-1-70b-instruct`); an ARN's id after its last `/`.
/// `None` for a name that is not one: a dot inside other names (`gpt-4.1`, `gemini-2.5-pro`)
/// follows a segment with a `-`, never a bare vendor word.
pub fn model_name(id: &str) -> Option<&str> {
    let id = id.rsplit_once('/').map_or(id, |(_, b)| b);
    let mut s = id.split(':').next().unwrap_or(id);
    if let Some((geo, rest)) = s.split_once('.') {
        if GEOS.contains(&geo) {
            s = rest;
        }
    }
    let (vendor, name) = s.split_once('.')?;
    let is_word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !is_word(vendor) || name.is_empty() {
        return None;
    }
    // The id's own version (`-v1`, `-v2`): the snapshot before it already tells models apart.
    Some(match name.rsplit_once("-v") {
        Some((n, v)) if !n.is_empty() && !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            n
        }
        _ => name,
    })
}

/// Whether a model id (a foundation model, an inference profile such as `us.anthropic.…`, or an
/// ARN naming one) is an Anthropic model, whose InvokeModel body is Anthropic's.
pub(super) fn is_anthropic(model: &str) -> bool {
    model.contains("anthropic.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_model_and_operation() {
        let p = "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream";
        assert_eq!(operation(p), Some(Op::ConverseStream));
        assert_eq!(
            model(p).as_deref(),
            Some("us.anthropic.claude-sonnet-4-20250514-v1:0")
        );
        let arn = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke";
        assert_eq!(operation(arn), Some(Op::Invoke));
        assert!(is_anthropic(&model(arn).unwrap()));
        assert_eq!(operation("/model/x/other"), None);
        assert_eq!(operation("/model//converse"), None);
        assert_eq!(operation("/v1/messages"), None);
    }

    #[test]
    fn model_ids_name_their_model() {
        for (id, name) in [
            (
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                Some("claude-sonnet-4-5-20250929"),
            ),
            (
                "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
                Some("claude-sonnet-4-5-20250929"),
            ),
            (
                "anthropic.claude-3-sonnet-20240229-v1:0:200k",
                Some("claude-3-sonnet-20240229"),
            ),
            (
                "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2",
                Some("claude"),
            ),
            (
                "meta.llama3-1-70b-instruct-v1:0",
                Some("llama3-1-70b-instruct"),
            ),
            ("us.amazon.nova-pro-v1:0", Some("nova-pro")),
            ("gpt-4.1", None),
            ("gemini-2.5-pro", None),
            ("anthropic.", None),
            (".x", None),
        ] {
            assert_eq!(model_name(id), name, "{id}");
        }
    }
}
