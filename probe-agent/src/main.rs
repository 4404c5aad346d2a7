//! `geoloc-probe-agent`: the measurement agent and its debugging subcommands.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use geoloc_probe_agent::agent::Agent;
use geoloc_probe_agent::config::{AgentConfig, ConfigFlags, ProcessEnv, TracerouteProtocol};
use geoloc_probe_agent::measure::{MeasureRequest, Measurer};
use geoloc_probe_agent::privileges::{self, EXIT_NO_PERMISSION};
use geoloc_probe_agent::Error;

/// Exit code for an invalid configuration (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code when the coordinator rejects the agent (sysexits EX_CONFIG).
const EXIT_REJECTED: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "geoloc-probe-agent",
    version,
    about = "Geolocation probe agent: ICMP echo, TCP handshake RTT and Paris traceroute on request of the coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register with the coordinator and run measurements until SIGINT/SIGTERM.
    Run {
        /// Print the effective configuration as TOML (token redacted) and exit.
        #[arg(long)]
        print_config: bool,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Measure one target locally and print the result as JSON (no coordinator needed).
    ///
    /// Private/loopback targets need --allow-private here: on this subcommand it stands
    /// for both the agent's and the requester's permission.
    Measure {
        /// Target IP address.
        #[arg(long)]
        target: IpAddr,
        /// ICMP echo.
        #[arg(long)]
        ping: bool,
        /// TCP handshake RTT.
        #[arg(long)]
        tcp: bool,
        /// Traceroute.
        #[arg(long)]
        traceroute: bool,
        /// Overall budget, ms (default: request-timeout-ms).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Pretty-print the JSON.
        #[arg(long)]
        pretty: bool,
        #[command(flatten)]
        config: ConfigFlags,
    },
    /// Print the resolved configuration as TOML (token redacted) and ICMP permissions,
    /// then exit.
    Check {
        #[command(flatten)]
        config: ConfigFlags,
    },
    #[command(flatten)]
    Docs(geoloc_rt::docs::DocsCommand),
}

/// Loads the configuration and installs the log subscriber in its `log-format`.
fn load_config(flags: &ConfigFlags) -> Result<AgentConfig, ExitCode> {
    let cfg = AgentConfig::load(flags, &ProcessEnv).map_err(|e| {
        eprintln!("geoloc-probe-agent: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    geoloc_rt::ops::init_logging(cfg.log_format);
    Ok(cfg)
}

fn require_icmp() -> Result<privileges::IcmpAccess, ExitCode> {
    privileges::require_icmp().map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_NO_PERMISSION as u8)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("geoloc-probe-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Docs(docs) => {
            docs.run(Cli::command(), &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            print_config,
            config,
        } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if print_config {
                print!("{}", cfg.to_redacted_toml()?);
                return Ok(ExitCode::SUCCESS);
            }
            if let Err(e) = cfg.identity() {
                eprintln!("geoloc-probe-agent: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            let access = match require_icmp() {
                Ok(a) => a,
                Err(code) => return Ok(code),
            };
            if !access.raw {
                tracing::warn!(
                    "no CAP_NET_RAW: ping works through ping_group_range, but traceroute requests will fail \
                     (grant CAP_NET_RAW: setcap cap_net_raw+ep, or systemd AmbientCapabilities=CAP_NET_RAW)"
                );
            }
            #[cfg(feature = "fault-injection")]
            if let Err(e) = geoloc_probe_agent::fault::init() {
                eprintln!("geoloc-probe-agent: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            let rt = runtime()?;
            let metrics_listen = cfg.metrics_listen;
            rt.block_on(async move {
                let measurer = Measurer::new(Arc::new(cfg));
                let agent = Agent::new(measurer)?;
                let stop = geoloc_rt::shutdown_token()?;
                if let Some(addr) = metrics_listen {
                    let mut registry = prometheus_client::registry::Registry::default();
                    agent.metrics().register(&mut registry);
                    let stopping = stop.clone();
                    let state =
                        geoloc_rt::ops::OpsState::new(registry, move || !stopping.is_cancelled());
                    let bound = geoloc_rt::ops::spawn(addr, state, stop.clone()).await?;
                    // Tests and scripts read this line to learn the port of `:0`.
                    println!("metrics listening on {bound}");
                }
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    stop.cancelled().await;
                    let _ = tx.send(true);
                });
                match agent.run(rx).await {
                    Ok(()) => Ok(ExitCode::SUCCESS),
                    Err(e @ Error::Rejected(_)) => {
                        eprintln!("geoloc-probe-agent: {e}");
                        Ok(ExitCode::from(EXIT_REJECTED))
                    }
                    Err(e) => Err(anyhow::Error::new(e)),
                }
            })
        }
        Command::Measure {
            target,
            ping,
            tcp,
            traceroute,
            timeout_ms,
            pretty,
            config,
        } => {
            let request_allows_private = config.allow_private == Some(true);
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if ping {
                if let Err(code) = require_icmp() {
                    return Ok(code);
                }
            }
            let (ping, tcp, traceroute) = if ping || tcp || traceroute {
                (ping, tcp, traceroute)
            } else {
                (true, true, true)
            };
            let rt = runtime()?;
            let result = rt.block_on(async move {
                let measurer = Measurer::new(Arc::new(cfg));
                let mut req = MeasureRequest::new("cli", target);
                req.ping = ping;
                req.tcp = tcp;
                req.traceroute = traceroute;
                req.allow_private = request_allows_private;
                req.timeout = timeout_ms.map(std::time::Duration::from_millis);
                measurer.run(&req).await
            });
            let json = if pretty {
                serde_json::to_string_pretty(&result)
            } else {
                serde_json::to_string(&result)
            }
            .context("serialize result")?;
            println!("{json}");
            Ok(if result.error.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Check { config } => {
            let cfg = match load_config(&config) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let access = privileges::probe_icmp_access();
            print!("{}", cfg.to_redacted_toml()?);
            println!(
                "icmp: raw socket (CAP_NET_RAW) = {}, datagram socket (ping_group_range {:?}) = {}",
                access.raw,
                access.ping_group_range.as_deref().unwrap_or("?"),
                access.datagram
            );
            println!(
                "traceroute protocol default: {}",
                match cfg.traceroute_protocol {
                    TracerouteProtocol::Icmp => "icmp",
                    TracerouteProtocol::Udp => "udp",
                    TracerouteProtocol::Tcp => "tcp",
                }
            );
            if !access.can_ping() {
                eprintln!("{}", privileges::no_icmp_message(&access));
                return Ok(ExitCode::from(EXIT_NO_PERMISSION as u8));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
