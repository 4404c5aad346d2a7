//! Ctrl-C / SIGTERM for the `geoloc lab` commands: wait for one, or clean the lab up on one.
use std::time::Duration;

use crate::netns;

/// A tokio runtime whose only job is to wait for Ctrl-C / SIGTERM.
pub(crate) fn wait_for_signal(limit: Option<Duration>) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let signal = geoloc_rt::shutdown_signal()?;
        let sleep = async {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = signal => Ok(true),
            _ = sleep => Ok(false),
        }
    })
}

/// Starts a thread that, on SIGINT or SIGTERM, kills the lab's child processes, deletes
/// its namespaces and exits with 130.
pub fn cleanup_on_signal() -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(|| {
            if let Ok(true) = wait_for_signal(None) {
                eprintln!("geoloc lab: interrupted, cleaning up");
                netns::cleanup_registered();
                std::process::exit(130);
            }
        })?;
    Ok(())
}
