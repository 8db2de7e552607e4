//! The command line: `serve` (the default), `migrate`, `tenant create`,
//! `user create` and `seed`. Every command reads the same [`Config`].
//! Output meant for scripts (ids) goes to stdout alone; everything else to
//! stderr.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use strata_db::model::Role;
use strata_db::repo::auth as repo;
use strata_db::{Db, DbError};
use uuid::Uuid;

use crate::app::{self, AppState};
use crate::config::Config;
use crate::resources::Errors;

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a multi-tenant business API that stays fast as it scales"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default when no command is given).
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Fill the database with realistic data for demos and load tests.
    Seed(SeedArgs),
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Do not apply migrations at start (apply them with `strata migrate`).
    #[arg(long)]
    pub no_migrate: bool,
    /// Do not create the demo tenant on an empty embedded database.
    #[arg(long)]
    pub no_demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its id alone on stdout.
    Create {
        #[arg(long)]
        name: String,
        /// ISO 4217 code of the tenant's currency.
        #[arg(long, default_value = "EUR")]
        currency: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user in a tenant; prints its id alone on stdout.
    Create {
        /// The tenant's id.
        #[arg(long)]
        tenant: Uuid,
        #[arg(long)]
        email: String,
        /// At least 8 characters.
        #[arg(long)]
        password: String,
        /// Display name; defaults to the email's local part.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = ["admin", "member"], default_value = "member")]
        role: String,
    },
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// How many tenants to create.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tenants: u32,
    /// Size multiplier: at 1 a tenant has 10 000 contacts, 2 000 deals, 5 000
    /// tasks, 1 000 invoices and 1 000 orders on average (sizes are skewed).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Password of every seeded user (`admin@tenant{i}.example`).
    #[arg(long, default_value = "strata-demo")]
    pub password: String,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => serve(config, args).await,
        Command::Migrate => {
            let db = connect(&config).await?;
            db.migrate().await.context("applying migrations")?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Tenant(TenantCommand::Create { name, currency }) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                bail!("--name must be 1 to 200 characters");
            }
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                bail!("--currency must be an ISO 4217 code such as EUR or USD");
            }
            let db = connect_migrated(&config).await?;
            let tenant = repo::create_tenant(&db, name, &currency).await?;
            println!("{}", tenant.id);
            Ok(())
        }
        Command::User(UserCommand::Create {
            tenant,
            email,
            password,
            name,
            role,
        }) => {
            let email = email.trim().to_lowercase();
            let mut errors = Errors::default();
            errors.email("email", Some(&email));
            if errors.into_result().is_err() {
                bail!("--email {email:?} is not a valid email address");
            }
            if password.chars().count() < 8 {
                bail!("--password must be at least 8 characters");
            }
            let role: Role = role.parse().map_err(|e| anyhow::anyhow!("--role {e}"))?;
            let name =
                name.unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
            let db = connect_migrated(&config).await?;
            if repo::tenant(&db, tenant).await?.is_none() {
                bail!("no tenant has the id {tenant}");
            }
            let password_hash = crate::auth::password::hash_blocking(password).await?;
            let new = repo::NewUser {
                tenant_id: tenant,
                email: &email,
                name: &name,
                role,
                password_hash: &password_hash,
            };
            match repo::create_user(&db, new).await {
                Ok(user) => {
                    println!("{}", user.id);
                    Ok(())
                }
                Err(DbError::Unique(_)) => bail!("a user with the email {email} already exists"),
                Err(e) => Err(e.into()),
            }
        }
        Command::Seed(args) => {
            if !(args.scale > 0.0 && args.scale <= 100.0) {
                bail!("--scale must be greater than 0 and at most 100");
            }
            let db = connect_migrated(&config).await?;
            let started = Instant::now();
            let tenants = seed(&db, args.tenants, args.scale, &args.password, args.seed).await?;
            let rows: u64 = tenants
                .iter()
                .map(|t| t.contacts + t.deals + t.tasks + t.invoices + t.orders)
                .sum();
            eprintln!(
                "seeded {} tenants, {rows} rows in {:.1} s; log in as admin@tenant1.example … admin@tenant{}.example with password {:?}",
                tenants.len(),
                started.elapsed().as_secs_f64(),
                args.tenants,
                args.password
            );
            Ok(())
        }
    }
}

async fn connect(config: &Config) -> anyhow::Result<Db> {
    Db::connect(&config.db())
        .await
        .context("connecting to the database (DATABASE_URL)")
}

async fn connect_migrated(config: &Config) -> anyhow::Result<Db> {
    let db = connect(config).await?;
    db.migrate().await.context("applying migrations")?;
    Ok(db)
}

async fn seed(
    db: &Db,
    tenants: u32,
    scale: f64,
    password: &str,
    seed: u64,
) -> anyhow::Result<Vec<strata_db::seed::SeededTenant>> {
    let password_hash = crate::auth::password::hash_blocking(password.to_owned()).await?;
    let options = strata_db::seed::SeedOptions {
        tenants,
        scale,
        password_hash,
        seed,
    };
    let seeded = strata_db::seed::seed(db, &options, |t| {
        tracing::debug!(tenant = t.index, contacts = t.contacts, "seeded tenant");
    })
    .await?;
    Ok(seeded)
}

/// The demo tenant's scale: a few hundred rows, enough to page and filter.
const DEMO_SCALE: f64 = 0.02;

async fn serve(config: Config, args: ServeArgs) -> anyhow::Result<()> {
    let db = connect(&config).await?;
    if !args.no_migrate {
        db.migrate()
            .await
            .context("applying migrations (start with --no-migrate to skip)")?;
    }
    if config.is_embedded() && !args.no_demo && !args.no_migrate && !repo::any_tenant(&db).await? {
        seed(&db, 1, DEMO_SCALE, "strata-demo", 42)
            .await
            .context("creating the demo tenant")?;
        eprintln!("created a demo tenant with sample data: log in as admin@tenant1.example with password strata-demo");
    }
    let listener = crate::listen::listener(&config)?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config, db).await?;
    eprintln!("strata listening on http://{addr}");
    app::serve(state, listener, shutdown_signal()).await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
