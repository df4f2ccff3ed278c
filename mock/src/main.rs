//! `tokenwarden-mock`: the mock LLM provider as a standalone server (see the `tokenwarden_mock` library).
//!
//! Prints exactly one line to stdout once bound — `tokenwarden-mock listening on <addr>` — so
//! scripts can use `--listen 127.0.0.1:0` and read the port. Exits cleanly on SIGTERM/SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::builder::BoolishValueParser;
use clap::Parser;
use tokenwarden_mock::{Fault, MockOptions, MockServer};

/// Mock OpenAI / Anthropic / Gemini provider for tests, benchmarks and demos.
///
/// Every knob can be overridden per request with a header: x-mock-input-tokens,
/// x-mock-output-chunks, x-mock-chunk-delay-ms, x-mock-events-per-write, x-mock-first-byte-delay-ms,
/// x-mock-tool-calls, x-mock-truncate-tool-args,
/// x-mock-cached-tokens, x-mock-reasoning-tokens, x-mock-gzip, x-mock-fault, and x-mock-script
/// (agent-loop: a tool call to a declared tool until the request carries its result, then the
/// final answer; input tokens counted from the prompt).
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-mock", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "TOKENWARDEN_MOCK_LISTEN",
        default_value = "127.0.0.1:18000"
    )]
    listen: SocketAddr,
    /// Streamed text chunks per answer (one output token each).
    #[arg(long, env = "TOKENWARDEN_MOCK_OUTPUT_CHUNKS", default_value_t = 20)]
    output_chunks: u32,
    /// Delay between streamed events, in milliseconds.
    #[arg(long, env = "TOKENWARDEN_MOCK_CHUNK_DELAY_MS", default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Streamed events handed to the connection together, as one write.
    #[arg(long, env = "TOKENWARDEN_MOCK_EVENTS_PER_WRITE", default_value_t = 1)]
    events_per_write: u32,
    /// Delay before the response head, in milliseconds.
    #[arg(
        long,
        env = "TOKENWARDEN_MOCK_FIRST_BYTE_DELAY_MS",
        default_value_t = 0
    )]
    first_byte_delay_ms: u64,
    /// Input tokens reported in usage.
    #[arg(long, env = "TOKENWARDEN_MOCK_INPUT_TOKENS", default_value_t = 12)]
    input_tokens: u64,
    /// Parallel tool calls per answer.
    #[arg(long, env = "TOKENWARDEN_MOCK_TOOL_CALLS", default_value_t = 0)]
    tool_calls: u32,
    /// Input tokens reported as cached.
    #[arg(long, env = "TOKENWARDEN_MOCK_CACHED_TOKENS", default_value_t = 0)]
    cached_tokens: u64,
    /// Reasoning tokens added to the output tokens.
    #[arg(long, env = "TOKENWARDEN_MOCK_REASONING_TOKENS", default_value_t = 0)]
    reasoning_tokens: u64,
    /// Gzip every response body.
    #[arg(long, env = "TOKENWARDEN_MOCK_GZIP", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    gzip: bool,
    /// Fault injected into every response: 500, 429, drop-mid-stream, garbage, one-byte-writes, hang.
    #[arg(long, env = "TOKENWARDEN_MOCK_FAULT")]
    fault: Option<Fault>,
    /// Do not record requests (GET /_mock/last_request then answers null).
    #[arg(long, env = "TOKENWARDEN_MOCK_NO_RECORD", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    no_record: bool,
    /// Tokio worker threads.
    #[arg(long, env = "TOKENWARDEN_MOCK_THREADS", default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenwarden-mock: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let opts = MockOptions {
        input_tokens: args.input_tokens,
        output_chunks: args.output_chunks,
        chunk_delay_ms: args.chunk_delay_ms,
        events_per_write: args.events_per_write,
        first_byte_delay_ms: args.first_byte_delay_ms,
        tool_calls: args.tool_calls,
        cached_tokens: args.cached_tokens,
        reasoning_tokens: args.reasoning_tokens,
        gzip: args.gzip,
        fault: args.fault,
        record_requests: !args.no_record,
        ..MockOptions::default()
    };
    let server = match MockServer::start(args.listen, opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tokenwarden-mock: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "tokenwarden-mock listening on {}", server.addr());
        let _ = out.flush();
    }
    if let Err(e) = wait_for_signal().await {
        eprintln!("tokenwarden-mock: cannot listen for signals: {e}");
        server.shutdown().await;
        return ExitCode::FAILURE;
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
