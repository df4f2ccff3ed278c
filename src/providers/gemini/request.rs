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
