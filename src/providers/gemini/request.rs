//! What a Gemini request's path says: the model (`/models/{model}:generateContent`) and whether
//! it streams (`:streamGenerateContent?alt=sse`; without `alt=sse` the stream is a JSON array).

/// The model named in the path.
pub(super) fn model(path: &str) -> Option<&str> {
    let after = &path[path.find("/models/")? + "/models/".len()..];
    Some(after.split(':').next().unwrap_or(after)).filter(|m| !m.is_empty())
}

/// Whether the request asked for an SSE stream.
pub(super) fn stream(path: &str, query: Option<&str>) -> bool {
    path.contains(":streamGenerateContent")
        && query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"))
}

/// Whether `path` is under Google's OpenAI-compatible endpoint: an `openai` segment right after
/// the API version (`/v1beta/openai/chat/completions`), where no `generateContent` path goes.
pub(super) fn openai_compatible(path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    segments.any(|s| s.starts_with("v1")) && segments.next() == Some("openai")
}
