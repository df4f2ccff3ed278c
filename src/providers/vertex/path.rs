//! What a Vertex AI path says:
//! `/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}`.

/// Google's own models (Gemini).
pub(super) const GOOGLE: &str = "google";
/// Anthropic's models.
pub(super) const ANTHROPIC: &str = "anthropic";
/// The model name of Anthropic's token count on Vertex (`models/count-tokens:rawPredict`).
pub(super) const COUNT_TOKENS: &str = "count-tokens";

/// The publisher segment, when the path names a publisher's model.
pub(super) fn publisher(path: &str) -> Option<&str> {
    let rest = &path[path.find("/publishers/")? + "/publishers/".len()..];
    let (publisher, rest) = rest.split_once('/')?;
    rest.starts_with("models/").then_some(publisher)
}

/// Whether the path is under a Vertex endpoint
/// (`/v1/projects/{p}/locations/{l}/endpoints/{endpoint}/…`): the OpenAI-compatible one
/// (`endpoints/openapi/chat/completions`) and a dedicated endpoint's own, whose bodies are OpenAI
/// Chat's.
pub(super) fn endpoint(path: &str) -> bool {
    endpoint_rest(path)
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(id, _)| !id.contains(':'))
}

/// Whether the path calls a deployed (tuned) Gemini model's endpoint with a Gemini method
/// (`endpoints/{endpoint}:generateContent`, `:streamGenerateContent`): Gemini bodies.
pub(super) fn tuned(path: &str) -> bool {
    endpoint_rest(path).is_some_and(|rest| {
        let id = rest.split('/').next().unwrap_or_default();
        id.contains(':')
    })
}

/// What follows `/locations/{l}/endpoints/`, when the path is under an endpoint.
fn endpoint_rest(path: &str) -> Option<&str> {
    let i = path.find("/locations/")?;
    let (_, rest) = path[i + "/locations/".len()..].split_once('/')?;
    rest.strip_prefix("endpoints/")
}

/// `{model}:{method}` after `/models/`.
fn model_method(path: &str) -> Option<(&str, Option<&str>)> {
    let after = &path[path.find("/models/")? + "/models/".len()..];
    Some(match after.split_once(':') {
        Some((m, method)) => (m, Some(method)),
        None => (after, None),
    })
}

/// The model named in the path.
pub(super) fn model(path: &str) -> Option<&str> {
    model_method(path).map(|(m, _)| m).filter(|m| !m.is_empty())
}

/// The model's name with its snapshot as a suffix, for a Vertex model id `name@snapshot`
/// (`claude-sonnet-4-5@20250929` → `claude-sonnet-4-5-20250929`, how Anthropic names it).
pub fn model_name(id: &str) -> Option<String> {
    let (name, snapshot) = id.split_once('@')?;
    (!name.is_empty() && !snapshot.is_empty()).then(|| format!("{name}-{snapshot}"))
}

/// The method after the model (`rawPredict`, `streamGenerateContent`, ...).
pub(super) fn method(path: &str) -> Option<&str> {
    model_method(path)?.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_openai_compatible_or_a_tuned_models() {
        let openai = "/v1/projects/p/locations/us-central1/endpoints/openapi/chat/completions";
        let dedicated = "/v1/projects/p/locations/us-central1/endpoints/123/chat/completions";
        let deployed = "/v1/projects/p/locations/us-central1/endpoints/123:generateContent";
        assert!(endpoint(openai) && !tuned(openai));
        assert!(endpoint(dedicated) && !tuned(dedicated));
        assert!(!endpoint(deployed) && tuned(deployed));
        let publisher = "/v1/projects/p/locations/l/publishers/google/models/m:generateContent";
        assert!(!endpoint(publisher) && !tuned(publisher));
    }

    #[test]
    fn paths_name_publisher_model_and_method() {
        let p = "/v1/projects/p1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict";
        assert_eq!(publisher(p), Some(ANTHROPIC));
        assert_eq!(model(p), Some("claude-sonnet-4@20250514"));
        assert_eq!(method(p), Some("streamRawPredict"));
        let g = "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent";
        assert_eq!(publisher(g), Some(GOOGLE));
        assert_eq!(
            publisher("/v1beta/models/gemini-2.5-pro:generateContent"),
            None
        );
        let o = "/v1/projects/p1/locations/us-central1/endpoints/openapi/chat/completions";
        assert!(endpoint(o));
        assert_eq!(publisher(o), None);
        assert!(!endpoint(p));
        assert!(!endpoint("/v1/endpoints/openapi/chat/completions"));
    }
}
