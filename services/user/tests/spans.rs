//! The user service's database spans, exported to a real OTLP/gRPC receiver:
//! a statement that fails marks its span failed with the kind of failure, one
//! that succeeds leaves the status unset, and neither carries bound values.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{AppSettings, spawn_app_with};
use suite_telemetry::{LogFormat, LoggingArgs, SamplerConfig, TracingConfig};
use suite_testkit::otlp::{ReceivedSpan, status};
use suite_testkit::{FaultProxy, OtlpReceiver, ProxyMode};
use tonic::Code;

fn db_spans<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_statement_marks_its_database_span_failed() {
    let Some(db) = suite_testkit::TestDatabase::create().await else {
        return;
    };
    let receiver = OtlpReceiver::start().await.unwrap();
    let mut tracing_config = TracingConfig::exporting_to("user-service", &receiver.endpoint());
    tracing_config.sampler = SamplerConfig::AlwaysOn;
    tracing_config.batch.schedule_delay = Duration::from_millis(50);
    let logging = LoggingArgs {
        log_format: LogFormat::Json,
        log_filter: "warn".into(),
    };
    // This test process is the service: its spans go to the receiver.
    let _telemetry = suite_telemetry::init("user-service", &logging, &tracing_config).unwrap();

    let proxy = FaultProxy::start(db.server_addr()).await;
    let mut settings = AppSettings::new(suite_db::DatabaseConfig::postgres(db.url_via(proxy.addr())));
    settings.database.acquire_timeout_ms = 500;
    settings.database.connect_timeout_ms = 500;
    let app = spawn_app_with(settings).await;
    app.create("spans@example.com", "Spans").await;
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| !db_spans(spans, "INSERT users").is_empty())
        .await;
    let insert = db_spans(&spans, "INSERT users")[0];
    assert_eq!(insert.status_code, status::UNSET, "{insert:?}");
    assert_eq!(insert.str("db.system"), Some("postgresql"));
    assert_eq!(insert.str("error.type"), None);

    proxy.set_mode(ProxyMode::Refuse);
    app.wait_for_health(tonic_health::ServingStatus::NotServing).await;
    let status = app.get(&uuid::Uuid::now_v7().to_string()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            db_spans(spans, "SELECT users").iter().any(|span| span.status_code == status::ERROR)
        })
        .await;
    let failed = db_spans(&spans, "SELECT users")
        .into_iter()
        .find(|span| span.status_code == status::ERROR)
        .unwrap_or_else(|| panic!("no failed SELECT span in {spans:#?}"));
    assert_eq!(failed.str("error.type"), Some("unavailable"), "{failed:?}");
    assert_eq!(failed.str("db.operation.name"), Some("SELECT"));
    // Only names and kinds: no statement text, no bound values.
    for (key, value) in &failed.attributes {
        assert!(!key.starts_with("db.query"), "{key} = {value:?}");
    }
}
