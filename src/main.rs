//! The `fusebox` binary: parse settings, start logging (and OTLP export), build and run
//! the server, then flush the exporter.

use clap::Parser;
use fusebox::app::Application;
use fusebox::config::{Cli, Command, Settings};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.settings)?;
    match cli.command {
        Some(Command::Openapi) => {
            println!("{}", fusebox::api::openapi::document_json());
            return Ok(());
        }
        Some(Command::Loadgen(args)) => return fusebox::loadgen::run(args).await,
        Some(Command::BenchFuse(args)) => return fusebox::bench_fuse::run(args).await,
        Some(Command::Demo(args)) => {
            let telemetry = fusebox::telemetry::init(settings.log_format)?;
            let result = fusebox::demo::run(args).await;
            telemetry.shutdown();
            return result;
        }
        Some(Command::Simulate(args)) => {
            print!("{}", fusebox::simulate::run(&args)?);
            return Ok(());
        }
        Some(Command::Serve) | None => {}
    }
    let telemetry = fusebox::telemetry::init(settings.log_format)?;
    let result = serve(settings).await;
    // After the server stopped (or failed to start): export the spans still buffered.
    telemetry.shutdown();
    result
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings.clone()).await?;
    if let Some(token) = &app.generated_admin_token {
        println!("No admin token existed, so one was created. Store it now; it is shown only once:\n\n    {token}\n");
    }
    tracing::info!(addr = %settings.addr, port = app.port(), "fusebox listening");
    app.run_until_stopped().await?;
    Ok(())
}
