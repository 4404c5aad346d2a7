//! `geoloc-coordinator`: the gRPC server for probe agents and clients.
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use geoloc_coordinator::config::{Args, Command, Config};
use geoloc_coordinator::{ops, server, storage, Coordinator, CoordinatorError};

/// mimalloc instead of glibc's malloc: a replica's hot paths (gRPC frames, result rows,
/// SQL binds) allocate and free many small buffers across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for an invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Docs(docs)) = &args.command {
        return match docs.run(Args::command(), &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("geoloc-coordinator: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Keys(keys)) = &args.command {
        let rt = match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("geoloc-coordinator: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match rt.block_on(keys.run(&mut std::io::stdout())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("geoloc-coordinator keys: {e}");
                match e {
                    CoordinatorError::InvalidConfig(_)
                    | CoordinatorError::Config { .. }
                    | CoordinatorError::DatabaseUrl(_) => ExitCode::from(EXIT_CONFIG),
                    _ => ExitCode::FAILURE,
                }
            }
        };
    }
    if let Some(Command::Probes(probes)) = &args.command {
        return run_probes_admin(probes);
    }
    let print_config = args.print_config;
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("geoloc-coordinator: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    geoloc_rt::ops::init_logging(config.log_format);
    if print_config {
        return match config.to_redacted_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("geoloc-coordinator: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geoloc-coordinator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        // Handlers installed before the port is announced: a stop right after is seen.
        match geoloc_rt::shutdown_token() {
            Ok(stop) => Some(run(config, stop).await),
            Err(e) => {
                eprintln!("geoloc-coordinator: {e}");
                None
            }
        }
    });
    let Some(result) = result else {
        return ExitCode::FAILURE;
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geoloc-coordinator: {e}");
            match e {
                CoordinatorError::InvalidConfig(_)
                | CoordinatorError::Config { .. }
                | CoordinatorError::Landmarks { .. }
                | CoordinatorError::DatabaseUrl(_)
                | CoordinatorError::Tls(_)
                | CoordinatorError::GeoIp { .. } => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `geoloc-coordinator probes ...`: one job against the configured database.
fn run_probes_admin(probes: &geoloc_coordinator::probes_admin::ProbesArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("geoloc-coordinator: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(probes.run(&mut std::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geoloc-coordinator probes: {e}");
            match e {
                CoordinatorError::InvalidConfig(_)
                | CoordinatorError::Config { .. }
                | CoordinatorError::DatabaseUrl(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(config: Config, stop: geoloc_rt::CancellationToken) -> geoloc_coordinator::Result<()> {
    let listen = config.listen;
    let db = storage::redact(&config.database);
    // Certificate and key checked before the database is opened: a bad file exits 64.
    let tls = geoloc_coordinator::grpc::tls::server_tls(
        &config,
        server::Limits::default().handshake_timeout,
    )?
    .is_some();
    // The web interface's know sources, checked before the database is opened (exit 64).
    let know = match config.http_listen {
        Some(_) => geoloc_coordinator::http::know_sources(&config)?,
        None => None,
    };
    let replica = config
        .cluster
        .then(|| geoloc_coordinator::cluster::choose_replica_id(config.replica_id.as_deref()));
    if let Some(id) = &replica {
        // Before the store is opened: runs this replica left unfinished carry its id.
        storage::cluster::set_replica_id(id)?;
    }
    let coord = Coordinator::new(config).await?;
    if replica.is_some() {
        geoloc_coordinator::cluster::start(coord.clone(), stop.clone()).await?;
    }
    // Bound before the gRPC line is printed: when a script reads it, the web interface is up.
    let web = match coord.config.http_listen {
        Some(a) => Some(server::bind(a).await?),
        None => None,
    };
    let (listener, addr) = server::bind(listen).await?;
    geoloc_coordinator::grpc::tls::check_plaintext(&coord.config, addr)?;
    tracing::info!(%addr, tls, database = %db, backend = coord.storage.backend(), replica = replica.as_deref().unwrap_or(""), landmarks = coord.landmarks.len(),
        geoip = coord.geoip.is_some(), allow_private = coord.config.allow_private, "geoloc-coordinator listening");
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "--insecure-plaintext: serving plaintext gRPC on a non-loopback address; probe credentials and results cross the network in clear");
    }
    if !coord.access.required() {
        tracing::warn!(%addr, "auth = \"none\": any local process can locate and administer without a key");
    }
    if coord.config.probe_token.is_some() {
        tracing::warn!(%addr, probe_auth = "shared-token",
            "probe authentication: LAB-ONLY shared fleet token (--probe-token): its holder can register any probe id \
             that is not enrolled; enrolled probes still need their own credential");
    } else {
        tracing::info!(%addr, probe_auth = "per-probe",
            "probe authentication: per-probe credentials only (geoloc-coordinator probes enroll); unknown credentials are refused");
    }
    if let Some((web_listener, web_addr)) = web {
        if !web_addr.ip().is_loopback() {
            tracing::warn!(%web_addr, "the web interface is served over PLAIN HTTP on a non-loopback address \
                (insecure-plaintext): results and API keys cross the network in clear; put it behind a TLS reverse proxy");
        }
        tracing::info!(%web_addr, "web interface listening");
        // Read like the line below (port 0 = any free port).
        println!("web interface on http://{web_addr}");
        let stop = stop.clone();
        let coord = coord.clone();
        tokio::spawn(async move {
            if let Err(e) =
                geoloc_coordinator::http::serve_with(coord, web_listener, know, stop).await
            {
                tracing::error!(error = %e, "web interface stopped");
            }
        });
    }
    // Tests and scripts read this line to learn the port when --listen uses port 0.
    println!("listening on {addr}");
    if let Some(maddr) = coord.config.metrics_listen {
        let bound = ops::spawn(&coord, maddr, stop.clone())
            .await
            .map_err(|source| CoordinatorError::Listen {
                addr: maddr,
                source,
            })?;
        println!("metrics listening on {bound}");
    }
    geoloc_coordinator::core::retention::spawn(coord.clone(), stop.clone());
    let graceful = {
        let stop = stop.clone();
        let coord = coord.clone();
        async move {
            stop.cancelled().await;
            tracing::info!("stopping: closing probe sessions");
            coord.begin_shutdown();
        }
    };
    let hard = async move {
        stop.cancelled().await;
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    };
    tokio::select! {
        r = server::serve(coord.clone(), listener, graceful) => r?,
        _ = hard => tracing::warn!("connections still open 5 s after the stop signal: closing them"),
    }
    coord.storage.close().await;
    tracing::info!("stopped");
    Ok(())
}
