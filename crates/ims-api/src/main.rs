//! The `ims-api` binary: parses the command line, reads the configuration and hands over to
//! the library.

use clap::{Parser, Subcommand};
use ims_api::{config::Settings, startup::Application, telemetry};

/// IMS: multi-tenant inventory management REST API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Apply migrations, then create a demo organization with a realistic history.
    Seed(ims_api::seed::SeedOptions),
    /// Exit 0 if the server at IMS_BIND answers `GET /health/live` with 200, else 1 (for a
    /// container's HEALTHCHECK: the runtime image has no curl).
    Healthcheck,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A `.env` that is there but does not parse stops start-up: dotenvy stops at the bad
    // line, so every setting after it would silently fall back to its default (a random
    // JWT secret, another database, someone else's Redis).
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("ims-api: configuration error: .env: {e}");
            std::process::exit(2);
        }
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("ims-api: configuration error: {e}");
            std::process::exit(2);
        }
    };
    // Held to the end of `main`: dropping it writes the lines still queued (also before an
    // early exit, which runs no destructor).
    let log_writer = telemetry::init(settings.log_json);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            // Listen for signals before the (possibly slow) start-up, so a SIGTERM during
            // migrations still ends the process in order instead of killing it.
            let signal = tokio::spawn(ims_api::startup::shutdown_signal());
            let app = Application::build(settings).await?;
            app.run_until(async {
                let _ = signal.await;
            })
            .await?;
        }
        Command::Healthcheck => {
            // Why it failed goes to stderr, where a container's health log keeps it (it
            // said nothing before; found by a probe).
            if let Err(why) = ims_api::health::probe_live(settings.bind).await {
                eprintln!("ims-api healthcheck: {why}");
                drop(log_writer);
                std::process::exit(1);
            }
        }
        Command::Migrate => {
            let db = ims_api::db::Db::connect(&settings.database_url)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the database (DATABASE_URL): {e}"))?;
            db.migrate().await?;
            tracing::info!("migrations applied");
        }
        Command::Seed(options) => {
            if let Err(e) = ims_api::seed::run(&settings, &options).await {
                eprintln!("ims-api seed: {e}");
                drop(log_writer);
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
