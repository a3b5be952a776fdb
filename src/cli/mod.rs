//! The command line: the gateway's settings, or one operator subcommand.
//!
//! `wsgate` alone runs the gateway with [`Args`]. `wsgate <command>` runs one operator job and
//! reads only the settings that job needs: [`parse`] looks at the first argument and, for a
//! subcommand, never builds the server's [`Args`], so a `REDIS_URL` or `LISTEN_ADDR` the job
//! does not use cannot break it (clap would read every environment variable of the top-level
//! command even when a subcommand follows).
//!
//! The jobs talk to a running gateway over its public interface, over http(s) and ws(s):
//!
//! - [`publish`]: `POST /api/events`;
//! - [`listen`]: `GET /ws/tasks`, every frame printed as one JSON line;
//! - [`token`]: mints a token with the configured secret;
//! - [`checktoken`]: says whether the configured gateway accepts a token, and precisely why not;
//! - [`admin`]: `stats`, `channels`, `history`, `disconnect` (the admin API, on `--admin-url`);
//! - [`net`]: the target URLs, the shared TLS set-up, HTTP requests and their errors.

mod admin;
mod checktoken;
mod listen;
mod net;
mod publish;
mod token;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Args, ConfigError};

/// The whole command line, as `wsgate --help` shows it: the gateway's settings, grouped by
/// topic, and the operator subcommands, grouped by job.
#[derive(Parser, Debug)]
#[command(
    name = "wsgate",
    version,
    about = "WebSocket fan-out gateway: backends POST events, browsers receive them.",
    long_about = "WebSocket fan-out gateway.\n\nBrowsers connect to GET /ws/tasks?token=<JWT> and \
                  receive JSON events; backends POST /api/events with a service token. With \
                  REDIS_URL set, instances share one audience through Redis. Every flag can be \
                  set through the environment variable shown in brackets; the flag wins.\n\n\
                  Without a command, the gateway runs. A command reads only the settings it \
                  needs: `wsgate help <command>` lists them.",
    // A subcommand comes first, alone: the settings below belong to the gateway.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub settings: Args,
}

/// The subcommands alone, for `wsgate <command> ...`: no server settings are parsed.
#[derive(Parser, Debug)]
#[command(name = "wsgate", version)]
struct Operator {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish one event through POST /api/events and print the gateway's answer.
    Publish(publish::PublishArgs),
    /// Connect to /ws/tasks and print every frame as one JSON line, until the gateway closes.
    Listen(listen::ListenArgs),
    /// Mint a token with the configured secret (JWT_SECRET or JWT_SECRET_FILE) and print it.
    Token(token::TokenArgs),
    /// Say whether the configured gateway accepts a token, and if not, exactly why.
    Checktoken(checktoken::CheckArgs),
    /// Print GET /ws/stats: connections on this instance and across the fleet.
    Stats(admin::StatsArgs),
    /// List the channels that have subscribers, across the fleet (GET /api/channels).
    Channels(admin::ChannelsArgs),
    /// Print stored events, oldest first (GET /api/history).
    History(admin::HistoryArgs),
    /// Close every connection of a user on every instance (POST /api/users/{sub}/disconnect).
    Disconnect(admin::DisconnectArgs),
}

/// How `wsgate --help` groups the subcommands (a unit test checks every one is listed once).
const GROUPS: [(&str, &[&str]); 3] = [
    ("Events", &["publish", "listen"]),
    ("Tokens", &["token", "checktoken"]),
    ("Operations (on --admin-url; an admin token but for stats)", &["stats", "channels", "history", "disconnect"]),
];

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the gateway with these settings.
    Serve(Box<Args>),
    /// Run one operator subcommand.
    Run(Box<Command>),
}

/// Parses the process's arguments; prints help, the version or a usage error and exits (code
/// 2 for an error) when clap says so.
pub fn parse() -> Invocation {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// [`parse`] for a given argument list (the program name first).
pub fn try_parse_from<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = args.get(1).and_then(|a| a.to_str());
    if first.is_some_and(is_subcommand) {
        let m = Operator::command().try_get_matches_from(args)?;
        return Ok(Invocation::Run(Box::new(Operator::from_arg_matches(&m)?.command)));
    }
    let m = command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&m)?;
    Ok(match cli.command {
        // Not reached (a subcommand is the first argument or a usage error), but harmless.
        Some(c) => Invocation::Run(Box::new(c)),
        None => Invocation::Serve(Box::new(cli.settings)),
    })
}

fn is_subcommand(name: &str) -> bool {
    Operator::command().get_subcommands().any(|s| s.get_name() == name || s.get_all_aliases().any(|a| a == name))
}

/// The top-level clap command, its help listing the subcommands by [`GROUPS`] before the
/// settings (clap has one heading for all subcommands; they are hidden from its own list).
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let header = cmd.get_styles().get_header().to_owned();
    let literal = cmd.get_styles().get_literal().to_owned();
    let width = cmd.get_subcommands().map(|s| s.get_name().len()).max().unwrap_or(0) + 2;
    let mut text = String::new();
    for (heading, names) in GROUPS {
        let _ = writeln!(text, "{}{heading}:{}", header.render(), header.render_reset());
        for name in names {
            let about =
                cmd.find_subcommand(name).and_then(|s| s.get_about()).map(|a| a.to_string()).unwrap_or_default();
            let pad = width - name.len();
            let _ = writeln!(text, "  {}{name}{}{:pad$}{about}", literal.render(), literal.render_reset(), "");
        }
        text.push('\n');
    }
    cmd.mut_subcommands(|s| s.hide(true))
        .override_usage("wsgate [OPTIONS]              (runs the gateway)\n       wsgate <COMMAND> [OPTIONS]")
        .before_help(text)
        .help_template(
            "{about-with-newline}\n{usage-heading} {usage}\n\nCommands (wsgate help <command> for its settings):\n\n\
         {before-help}{all-args}{after-help}",
        )
}

/// Why a subcommand failed. [`CliError::exit_code`]: 2 for what the operator must fix on the
/// command line or in the settings, 1 for a request that failed or a token that is refused.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A setting the subcommand uses is invalid (it names the setting).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line or its input cannot work as given.
    #[error("{0}")]
    Usage(String),
    /// No connection to the gateway.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The TLS handshake failed, most often over a certificate this machine does not trust.
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// The gateway answered with an error status; `message` is its `error` field.
    #[error("{what} answered {status}: {message}")]
    Refused { what: String, status: u16, message: String },
    /// `listen`: the gateway closed the connection.
    #[error("the gateway closed the connection: {code} {reason}")]
    Closed { code: u16, reason: String },
    /// `listen`: the connection ended without a close frame.
    #[error("the connection to the gateway was lost: {0}")]
    Lost(String),
    /// `checktoken`: the configured gateway would refuse the token (the report is printed).
    #[error("the gateway would refuse this token: {0}")]
    TokenRefused(String),
    /// Something of this machine's failed: the runtime, standard input, standard output.
    #[error("{0}")]
    Local(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs a subcommand on a small single-threaded runtime and says how it went: the error is
/// printed as `wsgate: <why>`. No logging is set up, so the output is only what it prints.
pub fn run_blocking(cmd: Command) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("cannot start the runtime: {e}")))
        .and_then(|rt| rt.block_on(run(cmd)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsgate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a subcommand.
pub async fn run(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Publish(a) => publish::run(a).await,
        Command::Listen(a) => listen::run(a).await,
        Command::Token(a) => token::run(a),
        Command::Checktoken(a) => checktoken::run(a).await,
        Command::Stats(a) => admin::stats(a).await,
        Command::Channels(a) => admin::channels(a).await,
        Command::History(a) => admin::history(a).await,
        Command::Disconnect(a) => admin::disconnect(a).await,
    }
}

/// Prints one line of output; a closed stdout (`wsgate listen | head -1`) ends the command.
fn print_line(line: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Local(format!("cannot write the output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(args: &[&str]) -> Command {
        match try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}")) {
            Invocation::Run(c) => *c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn the_help_groups_every_subcommand_once() {
        let mut listed: Vec<&str> = GROUPS.iter().flat_map(|(_, names)| names.iter().copied()).collect();
        listed.sort_unstable();
        let cmd = Cli::command();
        let mut all: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
        all.sort_unstable();
        assert_eq!(listed, all);
        let help = command().render_long_help().to_string();
        for (heading, names) in GROUPS {
            assert!(help.contains(&format!("{heading}:")), "{help}");
            for name in names {
                assert!(help.lines().any(|l| l.trim_start().starts_with(&format!("{name} "))), "{name}: {help}");
            }
        }
        assert!(help.contains("--listen-addr") && help.contains("Tokens:"), "{help}");
    }

    #[test]
    fn a_subcommand_does_not_parse_the_server_settings() {
        // A value the server's LISTEN_ADDR would refuse, as a flag: the subcommand has no such
        // flag, so it is a usage error there, and the server settings are not looked at.
        assert!(matches!(run_of(&["wsgate", "token", "--sub", "a"]), Command::Token(_)));
        let e = try_parse_from(["wsgate", "--listen-addr", "1.2.3.4:5", "token"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(matches!(try_parse_from(["wsgate"]).unwrap(), Invocation::Serve(_)));
        assert!(matches!(try_parse_from(["wsgate", "--listen-addr", "127.0.0.1:1"]).unwrap(), Invocation::Serve(_)));
    }

    #[test]
    fn user_and_channel_are_exclusive() {
        let e = try_parse_from(["wsgate", "publish", "--type", "t", "--user", "a", "--channel", "c"]).unwrap_err();
        assert!(e.to_string().contains("cannot be used with"), "{e}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::TokenRefused("x".into()).exit_code(), 1);
        let refused = CliError::Refused { what: "POST /api/events".into(), status: 403, message: "no".into() };
        assert_eq!(refused.exit_code(), 1);
    }
}
