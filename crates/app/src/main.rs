//! The `rendezvous` binary: a thin entry point over `rendezvous_app`. Exit codes: 0 done (or
//! `--help` / `--version`), 1 failed while running (or an operator command failed), 2 a bad
//! command line or configuration.

use std::io::Write;
use std::process::ExitCode;

use rendezvous_app::config::LogFormat;
use rendezvous_app::operator::Operation;
use rendezvous_app::{Application, Command, Config, telemetry};

fn main() -> ExitCode {
    match Config::from_args() {
        Ok(Command::Run(config)) => serve(*config),
        Ok(Command::Print(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Command::Operate(operation)) => operate(operation),
        Err(e) => {
            eprintln!("rendezvous: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `rendezvous serve`: telemetry, the application, until SIGINT or SIGTERM.
fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rendezvous: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the OTLP exporter needs it, also when it flushes on the way out.
    let _runtime = runtime.enter();
    let _telemetry = match telemetry::init(&config.telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("rendezvous: {e:#}");
            return ExitCode::from(2);
        }
    };
    let json = config.telemetry.log_format == LogFormat::Json;
    let result = runtime.block_on(async {
        let app = Application::build(config).await?;
        let (addr, admin) = (app.addr()?, app.admin_addr()?);
        let kafka = match (app.embedded_kafka(), app.kafka_brokers()) {
            (Some(bootstrap), _) => format!("embedded mock cluster, bootstrap servers {bootstrap}"),
            (None, Some(brokers)) => format!("consuming from {brokers}"),
            (None, None) => "ingress disabled".to_owned(),
        };
        let admin = admin.map_or_else(|| "off".to_owned(), |a| format!("http://{a}"));
        // Plain lines for a person; with JSON logs every line is JSON, these too.
        if json {
            tracing::info!(version = rendezvous_app::VERSION, revision = rendezvous_app::REVISION, %addr, %admin, %kafka, "rendezvous starting");
        } else {
            eprintln!(
                "rendezvous {} ({}) listening on {addr}",
                rendezvous_app::VERSION,
                rendezvous_app::REVISION
            );
            eprintln!("admin: {admin} (/metrics, /livez, /readyz)");
            eprintln!("kafka: {kafka}");
        }
        app.run_until(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "rendezvous failed");
            if !json {
                eprintln!("rendezvous: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// An operator command: its output on stdout; a failure on stderr with exit code 1.
fn operate(operation: Operation) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(operation.run()));
    match result {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rendezvous: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested: finishing in-flight work");
}
