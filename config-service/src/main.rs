//! `switchyard`: run the config service and operate it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use switchyard_config::client::{self, BearerToken};
use switchyard_config::desired::DesiredState;
use switchyard_config::{ServerConfig, StoreConfig};
use switchyard_config::{migration, output};
use switchyard_proto::state::State;
use switchyard_proto::v1::{
    ApplyRequest, GetHistoryRequest, GetSnapshotRequest, GetVersionRequest, ListClientsRequest,
    ListMigrationsRequest, MigrationPhase, MigrationRef, RollbackRequest, StartMigrationRequest,
};

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard config service and operator CLI"
)]
struct Cli {
    /// Config service endpoint (http://host:port or https://host:port).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ENDPOINT",
        default_value = "http://127.0.0.1:7070"
    )]
    endpoint: String,
    /// PEM file of the CA that signed the service's certificate (https endpoints).
    #[arg(long, global = true, env = "SWITCHYARD_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a service that requires mutual TLS.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the config service.
    Serve(ServeArgs),
    /// Make the configuration match a desired-state file (prints the diff first).
    Apply {
        /// Desired-state YAML (or JSON) file; `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show the diff without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Why (recorded in history).
        #[arg(short = 'm', long, default_value = "")]
        comment: String,
        /// Allow a file that removes every cluster and topic.
        #[arg(long)]
        allow_empty: bool,
        /// Apply only if the configuration is still at version N, the version the edit was
        /// based on (the `version:` that `get snapshot -o yaml` prints): otherwise fail, naming the current
        /// version and the changes made since, instead of reverting them.
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
    },
    /// Show what applying the file(s) would change, and exit 0 when nothing would, 1 when
    /// something would, 2 or more on an error (kubectl diff's contract, for CI gates). The
    /// service validates the change as `apply` would; nothing is applied.
    Diff {
        /// Desired-state YAML (or JSON) file; repeat for several (read as one configuration);
        /// `-` reads stdin.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Show part of the current configuration.
    Get {
        /// What to show.
        what: GetWhat,
        /// Output format.
        #[arg(short = 'o', long, default_value = "table")]
        output: Format,
        /// A past version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
        /// Show secret property values (sasl.password, ...) instead of `<redacted>`; needs the
        /// admin token (SWITCHYARD_TOKEN) and a server that has one.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Versions with author, comment and what changed.
    History {
        /// How many versions.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Show field-level changes.
        #[arg(long)]
        diff: bool,
        /// Show secret values in the diffs instead of `<redacted>` (needs the admin token).
        #[arg(long, requires = "diff")]
        show_secrets: bool,
        /// Output format.
        #[arg(short = 'o', long, default_value = "table")]
        output: Format,
    },
    /// Make a new version with the content of an earlier one.
    Rollback {
        /// The version to return to.
        #[arg(long = "to")]
        to: u64,
        /// Show the diff without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Why.
        #[arg(short = 'm', long, default_value = "")]
        comment: String,
    },
    /// Move a logical topic to another cluster under live traffic. The config service
    /// coordinates the migration (PREPARE → SWITCH → SEALED → DRAIN → COMPLETE): it creates or
    /// checks the destination, re-routes the topic, seals the source once every producer
    /// switched and completes once every consumer group drained. `--wait` shows its progress.
    /// `--abort ID` routes the topic back (until the seal); `--advance ID` forces the next
    /// phase (seal now / complete now).
    MoveTopic {
        /// The logical topic.
        #[arg(required_unless_present_any = ["abort", "advance", "ignore_group", "retire_source"])]
        topic: Option<String>,
        /// Destination cluster.
        #[arg(long = "to", required_unless_present_any = ["abort", "advance", "ignore_group", "retire_source"])]
        to: Option<String>,
        /// Destination physical topic (default: the current physical name).
        #[arg(long)]
        to_topic: Option<String>,
        /// Follow the migration until it is complete (or aborted).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (the migration goes on in the service).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout_secs: u64,
        /// Accept a destination whose partition count differs (per-key order is lost).
        #[arg(long)]
        allow_partition_mismatch: bool,
        /// Accept a destination topic that already holds records.
        #[arg(long)]
        allow_nonempty_destination: bool,
        /// Check everything and show the plan; create nothing, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Route the topic of migration ID back to its source (allowed until the seal; what
        /// was written to the destination meanwhile is copied back; `--wait` follows it).
        #[arg(long, value_name = "ID", conflicts_with_all = ["topic", "to", "advance", "dry_run"])]
        abort: Option<String>,
        /// Force migration ID on: seal without waiting for every producer (SWITCH), complete
        /// without waiting for every consumer group (DRAIN), or (ABORTING) release the held
        /// sends without waiting for every producer, then finish without waiting for groups.
        #[arg(long, value_name = "ID", conflicts_with_all = ["topic", "to", "dry_run"])]
        advance: Option<String>,
        /// `--ignore-group GROUP ID`: release consumer group GROUP from migration ID — it stops
        /// waiting for the group to drain the source (an abandoned group that still has
        /// committed offsets there). Recorded in the migration; the group's unread source
        /// records stay on the source.
        #[arg(long, value_names = ["GROUP", "ID"], num_args = 2,
              conflicts_with_all = ["topic", "to", "abort", "advance", "dry_run"])]
        ignore_group: Option<Vec<String>>,
        /// Stop watching the source of COMPLETE migration ID: until then (or the service's
        /// `--source-watch-secs` window) records a producer cut off from the service writes to
        /// the source are copied to the destination. What reached it so far is copied first.
        #[arg(long, value_name = "ID",
              conflicts_with_all = ["topic", "to", "abort", "advance", "ignore_group", "dry_run"])]
        retire_source: Option<String>,
        /// Why (recorded in history).
        #[arg(short = 'm', long, default_value = "")]
        comment: String,
    },
    /// Topic migrations, newest first.
    Migrations {
        /// Only migrations still running.
        #[arg(long)]
        active: bool,
        /// Only this migration.
        #[arg(long)]
        id: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, default_value = "table")]
        output: Format,
    },
    /// Print a shell completion script: `switchyard completion bash > /etc/bash_completion.d/switchyard`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `switchyard man > switchyard.1; man ./switchyard.1`.
    Man,
    /// Client tokens for applications (`serve --client-tokens FILE`).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// SDK clients currently reporting, with their applied versions.
    Clients {
        /// Only this app.
        #[arg(long, default_value = "")]
        app: String,
        /// Output format.
        #[arg(short = 'o', long, default_value = "table")]
        output: Format,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Mint a random client token for an app: prints the token (once; it is stored nowhere)
    /// and the line to add to the client-tokens file (it holds only the token's SHA-256).
    New {
        /// The application the token acts for.
        #[arg(long)]
        app: String,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Directory of the embedded version log (default: switchyard-data). With --store: only a
    /// replica given one runs the migration coordinator (whose record lives in the topic
    /// TOPIC-migrations next to the config log).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep versions in memory only (nothing survives a restart).
    #[arg(long, conflicts_with_all = ["data_dir", "store"])]
    in_memory: bool,
    /// A replicated store shared by several replicas: kafka://HOST:PORT[,HOST:PORT…]/TOPIC
    /// (a single-partition compacted topic on the home cluster, created if missing).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// A client property for the --store home cluster, e.g. `security.protocol=SASL_SSL`
    /// (repeatable; values may be `${file:/PATH}` or `${env:NAME}` references).
    #[arg(long = "store-property", value_name = "KEY=VALUE", requires = "store", value_parser = parse_key_value)]
    store_property: Vec<(String, String)>,
    /// A properties file (`key=value` lines, `#` comments) of client properties for the
    /// --store home cluster; --store-property entries override it.
    #[arg(long, value_name = "FILE", requires = "store")]
    store_properties_file: Option<PathBuf>,
    /// File holding the admin bearer token (required on non-loopback addresses).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Per-app client tokens: lines `APP SHA256-HEX` (`switchyard token new --app A` prints
    /// one). With it the metadata API needs a client token (or the admin token) and serves each
    /// app only its own view; without it the metadata API is open (loopback only) and serves
    /// no secret property. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    client_tokens: Option<PathBuf>,
    /// PEM certificate chain for TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that sign client certificates: every client must then present a
    /// certificate signed by one of them (mutual TLS). Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Versions of history kept (older ones are compacted away).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    retain_versions: u64,
    /// Seconds a client's status report stays listed.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    client_lease_secs: u64,
    /// Serve the admin HTTP port (Prometheus /metrics, the web dashboard) on this address;
    /// off when not given. Needs --admin-token-file unless it is a loopback address.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Migrations do not advance until the service has been up this long, so every live SDK
    /// client has reported after a (re)start; keep it above the SDK's status interval (10 s).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    migration_client_grace_secs: u64,
    /// After a migration completes, its source stays watched this long: records a producer cut
    /// off from the service writes there are copied to the destination
    /// (`move-topic --retire-source ID` ends it sooner).
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    source_watch_secs: u64,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GetWhat {
    Clusters,
    Topics,
    Quotas,
    Profiles,
    Snapshot,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Yaml,
}

/// `diff` found changes: exit 1 (not an error).
#[derive(Debug)]
struct ChangesFound;

impl std::fmt::Display for ChangesFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("changes found")
    }
}

impl std::error::Error for ChangesFound {}

/// Writes `bytes` to stdout; a reader that closed the pipe early (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The desired state of `file` (`-`: stdin).
fn read_desired(file: &std::path::Path) -> anyhow::Result<DesiredState> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        DesiredState::parse(&text).context("stdin is not a valid desired-state file")
    } else {
        Ok(DesiredState::load(file)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `diff` follows kubectl: 1 means "changes", so its errors exit 2.
    let error_code = if matches!(cli.cmd, Cmd::Diff { .. }) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ChangesFound>().is_some() => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", output::one_line(&e));
            error_code
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Cmd::Serve(args) = cli.cmd {
        return serve(args).await;
    }
    match &cli.cmd {
        // Rendered in memory first: the generators panic on a write error (a closed pipe).
        Cmd::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "switchyard", &mut out);
            return write_stdout(&out);
        }
        Cmd::Man => {
            let cmd = <Cli as clap::CommandFactory>::command().name("switchyard");
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            return write_stdout(&out);
        }
        _ => {}
    }
    if let Cmd::Token {
        cmd: TokenCmd::New { app },
    } = &cli.cmd
    {
        let m = switchyard_config::tokens::mint(app)?;
        println!("token: {}", m.token);
        println!("add to the client-tokens file (then send the service SIGHUP):");
        println!("{}", m.line);
        return Ok(());
    }
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("could not read {}", p.display()));
    let tls = client::TlsOptions {
        ca_pem: cli.ca_cert.as_ref().map(read).transpose()?,
        identity: match (&cli.client_cert, &cli.client_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        },
    };
    let token = std::env::var("SWITCHYARD_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let token = BearerToken::new(token.as_deref())?;
    let channel = client::connect_with_timeout(&cli.endpoint, &tls, Duration::from_secs(5)).await?;
    let mut admin = client::admin(channel.clone(), token.clone());
    let mut meta = client::metadata(channel, token);
    match cli.cmd {
        Cmd::Serve(_) | Cmd::Token { .. } | Cmd::Completion { .. } | Cmd::Man => {
            unreachable!("handled above")
        }
        Cmd::Apply {
            file,
            dry_run,
            comment,
            allow_empty,
            if_version,
        } => {
            let target = read_desired(&file)?.to_state()?;
            // The whole current configuration, secrets redacted: a redacted secret differs from
            // any real value, so a cluster whose secret the file sets or removes is upserted.
            let current = State::from_snapshot(
                admin
                    .get_version(GetVersionRequest {
                        version: 0,
                        include_secrets: false,
                    })
                    .await?
                    .into_inner(),
            );
            if let Some(base) = if_version
                && base != current.version
            {
                bail!("{}", moved_on(&mut admin, base, current.version).await);
            }
            if target.clusters.is_empty()
                && target.topics.is_empty()
                && !(current.clusters.is_empty() && current.topics.is_empty())
                && !allow_empty
            {
                bail!(
                    "the file names no clusters and no topics, which would delete everything; pass --allow-empty if that is intended"
                );
            }
            let changes = current.changes_to(&target);
            if changes.is_empty() {
                println!("no changes: version {} already matches", current.version);
                return Ok(());
            }
            let resp = match admin
                .apply(ApplyRequest {
                    expected_version: current.version,
                    changes,
                    dry_run,
                    author: author(),
                    comment,
                })
                .await
            {
                Ok(r) => r.into_inner(),
                // Another change landed between our read and our write.
                Err(e) if if_version.is_some() && e.code() == tonic::Code::FailedPrecondition => {
                    let now = admin
                        .get_version(GetVersionRequest {
                            version: 0,
                            include_secrets: false,
                        })
                        .await?
                        .into_inner()
                        .version;
                    bail!("{}", moved_on(&mut admin, current.version, now).await);
                }
                Err(e) => return Err(e.into()),
            };
            print!("{}", output::diff(&resp.diff));
            if resp.applied {
                println!(
                    "applied: version {} ({} changes)",
                    resp.version,
                    resp.diff.len()
                );
            } else if dry_run {
                println!(
                    "dry run: {} changes against version {}; nothing applied",
                    resp.diff.len(),
                    resp.version
                );
            } else {
                println!("no changes: version {} already matches", resp.version);
            }
        }
        Cmd::Diff { files } => {
            let mut desired = DesiredState::default();
            for f in &files {
                let d = read_desired(f)?;
                desired.clusters.extend(d.clusters);
                desired.topics.extend(d.topics);
                desired.quotas.extend(d.quotas);
                desired.profiles.extend(d.profiles);
            }
            let target = desired.to_state()?;
            let current = State::from_snapshot(
                admin
                    .get_version(GetVersionRequest {
                        version: 0,
                        include_secrets: false,
                    })
                    .await?
                    .into_inner(),
            );
            let changes = current.changes_to(&target);
            if changes.is_empty() {
                println!("no changes: version {} already matches", current.version);
                return Ok(());
            }
            // Validated by the service as an apply would be, and nothing applied.
            let resp = admin
                .apply(ApplyRequest {
                    expected_version: current.version,
                    changes,
                    dry_run: true,
                    author: author(),
                    comment: String::new(),
                })
                .await?
                .into_inner();
            print!("{}", output::diff(&resp.diff));
            if resp.diff.is_empty() {
                println!("no changes: version {} already matches", resp.version);
                return Ok(());
            }
            println!(
                "{} changes against version {}",
                resp.diff.len(),
                resp.version
            );
            return Err(ChangesFound.into());
        }
        Cmd::Get {
            what,
            output: fmt,
            version,
            show_secrets,
        } => {
            let snap = match (version, show_secrets) {
                // The whole configuration with secrets as `<redacted>` placeholders (so applying
                // this output back is refused rather than deleting them); a client token is
                // refused by the admin API and gets its app's view from the metadata API.
                (None, false) => match admin
                    .get_version(GetVersionRequest {
                        version: 0,
                        include_secrets: false,
                    })
                    .await
                {
                    Ok(s) => s.into_inner(),
                    Err(e)
                        if matches!(
                            e.code(),
                            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                        ) =>
                    {
                        meta.get_snapshot(GetSnapshotRequest {}).await?.into_inner()
                    }
                    Err(e) => return Err(e.into()),
                },
                (v, include_secrets) => admin
                    .get_version(GetVersionRequest {
                        version: v.unwrap_or(0),
                        include_secrets,
                    })
                    .await?
                    .into_inner(),
            };
            // The admin token's view of the metadata API carries secrets: never print them
            // unless asked.
            let snap = if show_secrets {
                snap
            } else {
                switchyard_proto::secrets::redact_snapshot(snap)
            };
            let state = State::from_snapshot(snap);
            let desired = DesiredState::from_state(&state);
            match fmt {
                Format::Table => print!("{}", output::table(&state, what_name(what))),
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&output::select_json(
                        &state,
                        &desired,
                        what_name(what)
                    )?)?
                ),
                Format::Yaml => print!(
                    "{}",
                    serde_yaml_ng::to_string(&output::select_json(
                        &state,
                        &desired,
                        what_name(what)
                    )?)?
                ),
            }
        }
        Cmd::History {
            limit,
            diff,
            show_secrets,
            output: fmt,
        } => {
            let h = admin
                .get_history(GetHistoryRequest {
                    before_version: 0,
                    limit,
                    include_diff: diff,
                    include_secrets: show_secrets,
                })
                .await?
                .into_inner();
            match fmt {
                Format::Table => print!("{}", output::history(&h, diff)),
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&output::history_json(&h))?
                ),
                Format::Yaml => print!("{}", serde_yaml_ng::to_string(&output::history_json(&h))?),
            }
        }
        Cmd::Rollback {
            to,
            dry_run,
            comment,
        } => {
            let resp = admin
                .rollback(RollbackRequest {
                    to_version: to,
                    expected_version: None,
                    dry_run,
                    author: author(),
                    comment,
                })
                .await?
                .into_inner();
            print!("{}", output::diff(&resp.diff));
            if resp.applied {
                println!(
                    "rolled back to the content of version {to}: new version {}",
                    resp.version
                );
            } else if dry_run {
                println!("dry run: {} changes; nothing applied", resp.diff.len());
            } else {
                println!("no changes: the current version already equals version {to}");
            }
        }
        Cmd::MoveTopic {
            topic,
            to,
            to_topic,
            wait,
            timeout_secs,
            allow_partition_mismatch,
            allow_nonempty_destination,
            dry_run,
            abort,
            advance,
            ignore_group,
            retire_source,
            comment,
        } => {
            let aborting = abort.is_some();
            let m = if let Some(id) = abort {
                let m = admin
                    .abort_migration(MigrationRef {
                        id,
                        author: author(),
                        comment,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if m.abort_version == 0 {
                    println!("{}: aborted before the route change", m.id);
                    return Ok(());
                }
                println!(
                    "{}: aborting; {} routed back to {}/{} (version {}); producers hold their \
                     sends until what was written to {}/{} is copied back",
                    m.id,
                    m.topic,
                    m.from_cluster,
                    m.from_physical,
                    m.abort_version,
                    m.to_cluster,
                    m.to_physical
                );
                if !wait {
                    return Ok(());
                }
                m
            } else if let Some(id) = advance {
                let m = admin
                    .advance_migration(MigrationRef {
                        id,
                        author: author(),
                        comment,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                println!("{}: {}", m.id, migration::progress_line(&m));
                m
            } else if let Some([group, id]) = ignore_group.as_deref() {
                let m = admin
                    .advance_migration(MigrationRef {
                        id: id.clone(),
                        author: author(),
                        comment,
                        ignore_group: group.clone(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                println!(
                    "{}: group {group} released; {}",
                    m.id,
                    migration::progress_line(&m)
                );
                m
            } else if let Some(id) = retire_source {
                let m = admin
                    .advance_migration(MigrationRef {
                        id,
                        author: author(),
                        comment,
                        retire_source: true,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                println!(
                    "{}: source {}/{} retired ({} late write(s), {} copied)",
                    m.id, m.from_cluster, m.from_physical, m.late_writes, m.mirrored
                );
                return Ok(());
            } else {
                let m = admin
                    .start_migration(StartMigrationRequest {
                        topic: topic.unwrap_or_default(),
                        to_cluster: to.unwrap_or_default(),
                        to_topic: to_topic.unwrap_or_default(),
                        allow_partition_mismatch,
                        allow_nonempty_destination,
                        dry_run,
                        author: author(),
                        comment,
                    })
                    .await?
                    .into_inner();
                println!("{}", output::migration_plan(&m, dry_run));
                if dry_run {
                    println!("dry run: checked; nothing created or changed");
                    return Ok(());
                }
                println!("switched: version {}", m.switch_version);
                m
            };
            if wait {
                let started = std::time::Instant::now();
                let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
                let done =
                    migration::wait(&mut admin, &m.id, Duration::from_secs(timeout_secs), |m| {
                        let line = format!(
                            "[{:>6.1}s] {}",
                            started.elapsed().as_secs_f64(),
                            migration::progress_line(m)
                        );
                        if tty {
                            print!("\r\x1b[2K{line}");
                            let _ = std::io::Write::flush(&mut std::io::stdout());
                        } else {
                            println!("{line}");
                        }
                    })
                    .await;
                if tty {
                    println!();
                }
                let done = done?;
                match MigrationPhase::try_from(done.phase) {
                    Ok(MigrationPhase::Complete) => {
                        println!(
                            "complete in {:.1}s: sealed source end offsets {:?}{}",
                            started.elapsed().as_secs_f64(),
                            done.sealed_offsets,
                            if done.forced {
                                " (forced by an operator)"
                            } else {
                                ""
                            }
                        );
                        if done.late_writes > 0 {
                            println!(
                                "warning: {} record(s) reached {}/{} after the seal (a producer \
                                 that had not switched); {} copied to {}/{}, where the consumer \
                                 groups read them",
                                done.late_writes,
                                done.from_cluster,
                                done.from_physical,
                                done.mirrored,
                                done.to_cluster,
                                done.to_physical
                            );
                        }
                    }
                    Ok(MigrationPhase::Aborted) if aborting => println!(
                        "aborted in {:.1}s: {} record(s) copied back from {}/{} to {}/{}{}",
                        started.elapsed().as_secs_f64(),
                        done.copied_back,
                        done.to_cluster,
                        done.to_physical,
                        done.from_cluster,
                        done.from_physical,
                        if done.forced {
                            " (forced by an operator)"
                        } else {
                            ""
                        }
                    ),
                    _ => anyhow::bail!(
                        "migration {} ended {}",
                        done.id,
                        migration::progress_line(&done)
                    ),
                }
            }
        }
        Cmd::Migrations {
            active,
            id,
            output: fmt,
        } => {
            let l = admin
                .list_migrations(ListMigrationsRequest {
                    id: id.unwrap_or_default(),
                    active_only: active,
                })
                .await?
                .into_inner();
            match fmt {
                Format::Table => print!("{}", output::migrations(&l.migrations)),
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&output::migrations_json(&l.migrations))?
                ),
                Format::Yaml => print!(
                    "{}",
                    serde_yaml_ng::to_string(&output::migrations_json(&l.migrations))?
                ),
            }
        }
        Cmd::Clients { app, output: fmt } => {
            let l = admin
                .list_clients(ListClientsRequest { app })
                .await?
                .into_inner();
            match fmt {
                Format::Table => print!("{}", output::clients(&l)),
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&output::clients_json(&l))?
                ),
                Format::Yaml => print!("{}", serde_yaml_ng::to_string(&output::clients_json(&l))?),
            }
        }
    }
    Ok(())
}

fn what_name(w: GetWhat) -> &'static str {
    match w {
        GetWhat::Clusters => "clusters",
        GetWhat::Topics => "topics",
        GetWhat::Quotas => "quotas",
        GetWhat::Profiles => "profiles",
        GetWhat::Snapshot => "snapshot",
    }
}

/// Why an edit based on version `base` is refused now that the configuration is at `now`:
/// the versions since (up to 10) with their authors and comments, and what to do.
async fn moved_on(admin: &mut client::AdminClient, base: u64, now: u64) -> String {
    if base > now {
        return format!(
            "--if-version {base} is ahead of the current version {now}: the edit was not based on this configuration"
        );
    }
    let since = admin
        .get_history(GetHistoryRequest {
            before_version: 0,
            limit: (now - base).min(10) as u32,
            include_diff: false,
            include_secrets: false,
        })
        .await
        .map(|h| {
            h.into_inner()
                .entries
                .iter()
                .filter(|e| e.version > base)
                .map(|e| {
                    let mut line = format!("version {} by {}", e.version, e.author);
                    if !e.comment.is_empty() {
                        line.push_str(&format!(" ({})", e.comment));
                    }
                    line
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut msg = format!(
        "the configuration moved on: it is at version {now}, the edit was based on version {base}; nothing was applied"
    );
    if !since.is_empty() {
        msg.push_str(&format!(
            "; changes since: {}{}",
            since.join(", "),
            if now - base > 10 { ", …" } else { "" }
        ));
    }
    msg.push_str(&format!(
        ". Re-read the configuration (switchyard get snapshot -o yaml), redo the edit on it and apply with --if-version {now}"
    ));
    msg
}

fn author() -> String {
    std::env::var("SWITCHYARD_AUTHOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "cli".into())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let admin_token = match &args.admin_token_file {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("could not read the admin token file {}", p.display()))?;
            let t = t.trim().to_string();
            if t.len() < 16 {
                bail!(
                    "the admin token in {} is shorter than 16 characters",
                    p.display()
                );
            }
            Some(t)
        }
        None => None,
    };
    let mut store_properties = std::collections::BTreeMap::new();
    if let Some(f) = &args.store_properties_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("could not read --store-properties-file {}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let (k, v) = parse_key_value(line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", f.display(), i + 1))?;
            store_properties.insert(k, v);
        }
    }
    store_properties.extend(args.store_property.iter().cloned());
    let cfg = ServerConfig {
        listen: args.listen,
        store: match (args.in_memory, args.store) {
            (true, _) => StoreConfig::Memory,
            (false, Some(url)) => {
                // Validate now for a precise message before anything starts.
                switchyard_config::store::KafkaConfig::from_url(&url, 1)
                    .map_err(|e| anyhow::anyhow!("invalid --store: {e}"))?;
                StoreConfig::Kafka {
                    url,
                    coordinator_dir: args.data_dir,
                }
            }
            (false, None) => StoreConfig::File {
                dir: args
                    .data_dir
                    .unwrap_or_else(|| PathBuf::from("switchyard-data")),
            },
        },
        retain_versions: usize::try_from(args.retain_versions).unwrap_or(usize::MAX),
        admin_token,
        tls: args.tls_cert.zip(args.tls_key),
        tls_client_ca: args.tls_client_ca,
        store_properties,
        client_lease: Duration::from_secs(args.client_lease_secs),
        shutdown_grace: Duration::from_secs(10),
        admin_listen: args.admin_listen,
        client_tokens: args.client_tokens,
        migrations: switchyard_config::migration::MigrationConfig {
            client_grace: Duration::from_secs(args.migration_client_grace_secs),
            source_watch: Duration::from_secs(args.source_watch_secs),
            ..Default::default()
        },
    };
    let server = switchyard_config::start(cfg).await?;
    // Install the handlers before announcing readiness: a SIGTERM right after the line below must
    // shut down gracefully, not kill the process with the default action.
    let signal = shutdown_signal()?;
    // Printed on stdout so scripts and tests can find a port chosen with :0.
    println!("listening on {}", server.local_addr());
    if let Some(a) = server.admin_addr() {
        println!("admin http://{a}/ (dashboard, /metrics)");
    }
    #[cfg(unix)]
    if let Some(tokens) = server.client_tokens().cloned() {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup =
            signal(SignalKind::hangup()).context("could not install the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tokens.reload() {
                    Ok(n) => {
                        tracing::info!(apps = n, path = %tokens.path().display(), "reloaded client tokens")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "client tokens file rejected; the previous tokens stay in force")
                    }
                }
            }
        });
    }
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    server.join().await
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C); the handlers are installed when this is called.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term =
            signal(SignalKind::terminate()).context("could not install the SIGTERM handler")?;
        let mut int =
            signal(SignalKind::interrupt()).context("could not install the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// `KEY=VALUE` (also `KEY: VALUE`, as in Java properties files), both trimmed; the key must
/// not be empty.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let i = s
        .find(['=', ':'])
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let (k, v) = (s[..i].trim(), s[i + 1..].trim());
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}
