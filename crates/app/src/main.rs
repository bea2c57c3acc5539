//! The `rendezvous` binary: a thin entry point over `rendezvous_app`. Exit codes: 0 done (or
//! `--help` / `--version`), 1 failed while running, 2 a bad command line or configuration.

use std::io::Write;
use std::process::ExitCode;

use rendezvous_app::{Application, Command, Config, telemetry};

fn main() -> ExitCode {
    match Config::from_args() {
        Ok(Command::Run(config)) => serve(*config),
        Ok(Command::Print(text)) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
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
    let result = runtime.block_on(async {
        let app = Application::build(config).await?;
        eprintln!(
            "rendezvous {} listening on {}",
            rendezvous_app::VERSION,
            app.addr()?
        );
        match (app.embedded_kafka(), app.kafka_brokers()) {
            (Some(bootstrap), _) => {
                eprintln!("kafka: embedded mock cluster, bootstrap servers {bootstrap}")
            }
            (None, Some(brokers)) => eprintln!("kafka: consuming from {brokers}"),
            (None, None) => eprintln!("kafka: ingress disabled"),
        }
        app.run_until(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "rendezvous failed");
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
