//! The suite's traces go through OpenTelemetry's own pipeline and nothing else:
//! no crate that ships writes OTLP protobuf or parses or writes `traceparent`, the
//! telemetry crate steers no HTTP/2 header compression, and it exports with
//! `opentelemetry-otlp`. (That the spans really leave through it is shown end to
//! end: the receivers in `tests/tests/tracing_binary.rs` check the exporter's
//! user agent on every export.)

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// The source of the crates that ship: the services and the shared libraries, test
/// support excluded, each file without its unit tests.
fn shipped_sources() -> Vec<(PathBuf, String)> {
    let root = workspace_root();
    let mut crates = Vec::new();
    for group in ["services", "shared"] {
        for entry in std::fs::read_dir(root.join(group)).unwrap() {
            let path = entry.unwrap().path();
            if path.join("src").is_dir() && !path.ends_with("testkit") {
                crates.push(path.join("src"));
            }
        }
    }
    assert!(crates.len() >= 10, "the services and shared crates: {crates:?}");
    let mut files = Vec::new();
    for source in crates {
        rust_files(&source, &mut files);
    }
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let shipped = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            (path, shipped)
        })
        .collect()
}

#[test]
fn no_shipped_crate_encodes_otlp_parses_trace_context_or_tunes_hpack() {
    let forbidden = [
        // OTLP written by hand: its protobuf package (and the collector's service path), its messages.
        "opentelemetry_proto",
        "opentelemetry.proto.",
        "ExportTraceServiceRequest",
        "resource_spans",
        // W3C trace context headers named, so read or written, outside OpenTelemetry's propagators.
        "\"traceparent\"",
        "\"tracestate\"",
    ];
    // HTTP/2 header compression steered by hand for trace context (the telemetry crate's
    // business; the gRPC layer's request id, not trace context, is sent as a literal).
    let telemetry_only = ["hpack", "set_sensitive("];
    let sources = shipped_sources();
    let mut found = Vec::new();
    for (path, text) in &sources {
        let lowercase = text.to_lowercase();
        let in_telemetry = path.components().any(|part| part.as_os_str() == "telemetry");
        let patterns = forbidden.iter().chain(telemetry_only.iter().filter(|_| in_telemetry));
        for pattern in patterns {
            if lowercase.contains(&pattern.to_lowercase()) {
                found.push(format!("{}: {pattern}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "hand-made protocol code is back:\n{}", found.join("\n"));
}

#[test]
fn the_telemetry_crate_exports_with_opentelemetry_otlp() {
    let root = workspace_root();
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    assert!(
        lock.contains("name = \"opentelemetry-otlp\""),
        "opentelemetry-otlp is not in Cargo.lock"
    );
    let manifest = std::fs::read_to_string(root.join("shared/telemetry/Cargo.toml")).unwrap();
    assert!(manifest.contains("opentelemetry-otlp.workspace = true"), "{manifest}");
    let export = std::fs::read_to_string(root.join("shared/telemetry/src/export.rs")).unwrap();
    assert!(
        export.contains("opentelemetry_otlp::SpanExporter::builder()"),
        "the exporter is not built from opentelemetry-otlp"
    );
    assert!(
        export.contains("BatchSpanProcessor::builder("),
        "spans are not batched by the SDK's processor"
    );
}
