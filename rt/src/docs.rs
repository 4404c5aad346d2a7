//! Shell completions ([`clap_complete`]) and man pages ([`clap_mangen`]) generated from a
//! binary's clap definition, as two hidden subcommands every binary flattens in:
//!
//! ```text
//! geoloc completions bash > /usr/share/bash-completion/completions/geoloc
//! geoloc man /usr/local/share/man/man1
//! ```
use std::io::Write;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

use crate::error::{Error, Result};

// The hidden `completions SHELL` and `man DIR` subcommands. (No doc comment: clap would
// make it the `about` of a binary that flattens this in.)
#[allow(missing_docs)]
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DocsCommand {
    /// Print a shell completion script (bash, elvish, fish, powershell, zsh) to stdout.
    #[command(hide = true)]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write man pages (section 1, one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

impl DocsCommand {
    /// Generates for `cmd` (the binary's `clap::Command`, e.g. `Cli::command()`), writing
    /// completions to `out`.
    pub fn run(&self, cmd: clap::Command, out: &mut dyn Write) -> Result<()> {
        match self {
            DocsCommand::Completions { shell } => completions(cmd, *shell, out),
            DocsCommand::Man { dir } => man_pages(cmd, dir).map(|_| ()),
        }
    }
}

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) -> Result<()> {
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    out.write_all(&buf).map_err(|source| Error::Write {
        path: PathBuf::from("<stdout>"),
        source,
    })
}

/// Writes `NAME.1` and one `NAME-SUB.1` per subcommand into `dir`; returns the files.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    clap_mangen::generate_to(cmd, dir).map_err(io(dir))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    #[derive(Parser)]
    #[command(name = "demo")]
    struct Cli {
        #[command(subcommand)]
        command: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Do it.
        Run {
            /// How hard.
            #[arg(long)]
            effort: u32,
        },
        #[command(flatten)]
        Docs(DocsCommand),
    }

    #[test]
    fn completions_and_man_pages_name_subcommands_and_flags() {
        let mut out = Vec::new();
        completions(Cli::command(), Shell::Bash, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("run") && text.contains("--effort"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let files = man_pages(Cli::command(), dir.path()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"demo.1".into()), "{names:?}");
        assert!(names.contains(&"demo-run.1".into()), "{names:?}");
        let page = std::fs::read_to_string(dir.path().join("demo-run.1")).unwrap();
        assert!(
            page.contains("effort") && page.contains("How hard"),
            "{page}"
        );
    }

    #[test]
    fn the_docs_subcommands_parse_and_are_hidden() {
        let cli = Cli::try_parse_from(["demo", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Cmd::Docs(DocsCommand::Completions { shell: Shell::Zsh })
        ));
        let help = Cli::command().render_help().to_string();
        assert!(
            !help.contains("completions") && !help.contains("man "),
            "{help}"
        );
    }
}
