//! `starling service install | uninstall | status`: run the node untended under systemd.
//!
//! `install` writes a unit that runs `starling up` with an absolute binary path and data
//! directory, restarts it on failure (but gives up after five failures in five minutes, so a
//! damaged store does not loop forever), stops it with SIGTERM so held work is released, and
//! logs to journald. A user unit (the default) runs as the invoking user with no root needed; a
//! system unit (`--system`) runs as `--run-as USER`, or as a dynamic user with its data in
//! `/var/lib/starling`. Then it reloads systemd and enables and starts the unit, unless
//! `--no-start`. Where systemd is not running (a container), the unit is written and the
//! command says so and what to run, exiting non-zero since nothing was started.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The unit's name unless `--name` says otherwise.
pub const DEFAULT_NAME: &str = "starling";

/// `starling service`.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCmd {
    /// Write a systemd unit running `starling up`, then enable and start it.
    ///
    /// Examples:
    ///   starling service install                       # a user unit, data in the default dir
    ///   starling service install --data-dir ~/starling -- --listen /ip4/0.0.0.0/tcp/4001
    ///   sudo starling service install --system         # a dynamic user, data in /var/lib/starling
    ///   starling service install --print               # show the unit, write nothing
    #[command(verbatim_doc_comment)]
    Install(InstallArgs),
    /// Stop and disable the unit, and remove its file (the node's data stays).
    #[command(
        after_help = "Examples:\n  starling service uninstall\n  sudo starling service uninstall --system"
    )]
    Uninstall(ScopeArgs),
    /// Where the unit is, and what systemd says of it.
    #[command(
        after_help = "Examples:\n  starling service status\n  sudo starling service status --system"
    )]
    Status(ScopeArgs),
}

/// Which unit: user or system, its name, and where unit files go.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// A system unit (in /etc/systemd/system; needs root) instead of a user unit.
    #[arg(long)]
    pub system: bool,
    /// The unit's name, without `.service`.
    #[arg(long, default_value = DEFAULT_NAME, value_parser = parse_name)]
    pub name: String,
    /// Where unit files go [default: ~/.config/systemd/user, or /etc/systemd/system with
    /// --system].
    #[arg(long, value_name = "DIR")]
    pub unit_dir: Option<PathBuf>,
}

/// `starling service install`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// The node's data directory [default: the platform data dir for a user unit,
    /// /var/lib/starling for a system unit without --run-as].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A configuration file for `starling up --config`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// System units only: the user the node runs as [default: a dynamic user].
    #[arg(long, value_name = "USER", requires = "system")]
    pub run_as: Option<String>,
    /// Write the unit but neither enable nor start it.
    #[arg(long)]
    pub no_start: bool,
    /// Print the unit to standard output and write nothing.
    #[arg(long)]
    pub print: bool,
    /// Replace an existing unit file that differs.
    #[arg(long)]
    pub force: bool,
    /// More arguments for `starling up`, after `--`.
    #[arg(last = true, value_name = "UP_ARGS")]
    pub up_args: Vec<String>,
}

fn parse_name(s: &str) -> std::result::Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with('.');
    if ok {
        Ok(s.trim_end_matches(".service").to_owned())
    } else {
        Err("a unit name is 1-64 letters, digits, '-', '_' or '.'".into())
    }
}

/// Runs `starling service ...`.
pub fn run(cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Install(args) => install(&args),
        ServiceCmd::Uninstall(scope) => uninstall(&scope),
        ServiceCmd::Status(scope) => status(&scope),
    }
}

/// What goes into a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    pub system: bool,
    pub binary: PathBuf,
    /// `None` for a system unit with a dynamic user: `%S/starling` (StateDirectory).
    pub data_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub run_as: Option<String>,
    pub up_args: Vec<String>,
}

/// Quotes one word for a unit's `ExecStart=` so systemd hands it over unchanged: double
/// quotes when needed, `\` and `"` escaped, and systemd's own `%` and `$` expansions doubled.
pub fn quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && escaped.chars().all(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        return escaped;
    }
    let mut out = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The unit file's text.
pub fn render(spec: &UnitSpec) -> String {
    let mut exec = vec![quote(&spec.binary.to_string_lossy()), "up".to_owned()];
    exec.push("--data-dir".into());
    exec.push(match &spec.data_dir {
        Some(d) => quote(&d.to_string_lossy()),
        None => "%S/starling".into(),
    });
    if let Some(c) = &spec.config {
        exec.push("--config".into());
        exec.push(quote(&c.to_string_lossy()));
    }
    exec.extend(spec.up_args.iter().map(|a| quote(a)));

    let mut u = String::new();
    let _ = writeln!(
        u,
        "# Written by `starling service install`; `starling service uninstall` removes it."
    );
    let _ = writeln!(u, "[Unit]");
    let _ = writeln!(u, "Description=Starling volunteer node");
    let _ = writeln!(u, "Wants=network-online.target");
    let _ = writeln!(u, "After=network-online.target");
    // Five failures in five minutes (a damaged store, a bad setting) stop the restarts.
    let _ = writeln!(u, "StartLimitIntervalSec=300");
    let _ = writeln!(u, "StartLimitBurst=5");
    let _ = writeln!(u);
    let _ = writeln!(u, "[Service]");
    let _ = writeln!(u, "Type=exec");
    let _ = writeln!(u, "ExecStart={}", exec.join(" "));
    let _ = writeln!(u, "Restart=on-failure");
    let _ = writeln!(u, "RestartSec=10");
    // SIGTERM lets the node release what it holds; give it time to say so to its peers.
    let _ = writeln!(u, "KillSignal=SIGTERM");
    let _ = writeln!(u, "TimeoutStopSec=30");
    let _ = writeln!(u, "StandardOutput=journal");
    let _ = writeln!(u, "StandardError=journal");
    let _ = writeln!(u, "NoNewPrivileges=yes");
    if spec.system {
        match &spec.run_as {
            Some(user) => {
                let _ = writeln!(u, "User={user}");
            }
            None => {
                let _ = writeln!(u, "DynamicUser=yes");
                let _ = writeln!(u, "StateDirectory=starling");
            }
        }
        let _ = writeln!(u, "ProtectSystem=full");
        let _ = writeln!(u, "PrivateTmp=yes");
    }
    let _ = writeln!(u);
    let _ = writeln!(u, "[Install]");
    let target = if spec.system { "multi-user.target" } else { "default.target" };
    let _ = writeln!(u, "WantedBy={target}");
    u
}

/// Where unit files go for this scope.
pub fn unit_dir(scope: &ScopeArgs) -> Result<PathBuf> {
    if let Some(d) = &scope.unit_dir {
        return crate::config::absolute(d, "unit dir");
    }
    if scope.system {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => directories::BaseDirs::new()
            .map(|b| b.home_dir().join(".config"))
            .context("no home directory for a user unit; pass --unit-dir DIR or --system")?,
    };
    Ok(base.join("systemd").join("user"))
}

fn unit_path(scope: &ScopeArgs) -> Result<PathBuf> {
    Ok(unit_dir(scope)?.join(format!("{}.service", scope.name)))
}

/// Whether systemd runs this machine (as `sd_booted` tells).
fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Runs `systemctl [--user] ARGS`, answering its output or why it failed.
fn systemctl(system: bool, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("systemctl");
    if !system {
        cmd.arg("--user");
    }
    let out = cmd.args(args).output().context("cannot run systemctl")?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(text)
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        bail!("systemctl {}: {}", args.join(" "), if err.is_empty() { text } else { err })
    }
}

fn scope_flag(system: bool) -> &'static str {
    if system { "" } else { " --user" }
}

fn install(args: &InstallArgs) -> Result<()> {
    let scope = &args.scope;
    let binary = std::env::current_exe().context("cannot tell where this starling binary is")?;
    let data_dir = match (&args.data_dir, scope.system && args.run_as.is_none()) {
        (Some(d), _) => Some(crate::config::resolve_data_dir(Some(d))?),
        (None, true) => None,
        (None, false) if scope.system => {
            bail!("a system unit run as another user needs --data-dir DIR (one that user owns)")
        }
        (None, false) => Some(crate::config::resolve_data_dir(None)?),
    };
    let config =
        args.config.as_deref().map(|c| crate::config::absolute(c, "config file")).transpose()?;
    if let Some(c) = &config
        && !c.is_file()
    {
        bail!("config file {} does not exist", c.display());
    }
    let spec = UnitSpec {
        system: scope.system,
        binary: binary.clone(),
        data_dir: data_dir.clone(),
        config,
        run_as: args.run_as.clone(),
        up_args: args.up_args.clone(),
    };
    let text = render(&spec);
    if args.print {
        print!("{text}");
        return Ok(());
    }
    let path = unit_path(scope)?;
    if let Ok(old) = std::fs::read_to_string(&path)
        && old != text
        && !args.force
    {
        bail!(
            "{} exists and differs from the unit this would write; pass --force to replace it \
             (or --print to compare)",
            path.display()
        );
    }
    let dir = path.parent().context("unit path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some(d) = &data_dir {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // Whole or not at all: a unit read half-written would fail in confusing ways.
    let tmp = dir.join(format!(".{}.service.tmp", scope.name));
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    println!("  runs   {} up", binary.display());
    match &data_dir {
        Some(d) => println!("  data   {}", d.display()),
        None => println!("  data   /var/lib/starling (a dynamic user's state directory)"),
    }
    if spec.system && spec.run_as.is_none() && binary.starts_with("/root") {
        println!(
            "  note   the dynamic user cannot read {}; copy the binary to /usr/local/bin and \
             install again from there",
            binary.display()
        );
    }
    let flag = scope_flag(scope.system);
    let name = &scope.name;
    if args.no_start {
        println!("not started (--no-start). To start it now and at every boot:");
        println!("  systemctl{flag} daemon-reload && systemctl{flag} enable --now {name}");
        return Ok(());
    }
    if !systemd_booted() {
        bail!(
            "the unit is written, but systemd is not running on this machine, so it was not \
             started; run `starling up` another way, or on a systemd machine: \
             systemctl{flag} daemon-reload && systemctl{flag} enable --now {name}"
        );
    }
    systemctl(scope.system, &["daemon-reload"])?;
    systemctl(scope.system, &["enable", "--now", &format!("{name}.service")])?;
    println!("enabled and started; follow its log with: journalctl{flag} -u {name} -f");
    if !scope.system {
        println!(
            "  a user unit runs while you are logged in; to keep it running after you log \
             out: loginctl enable-linger"
        );
    }
    Ok(())
}

fn uninstall(scope: &ScopeArgs) -> Result<()> {
    let path = unit_path(scope)?;
    let name = format!("{}.service", scope.name);
    if systemd_booted() {
        // A unit systemd does not know is fine to remove: say what failed, carry on.
        if let Err(e) = systemctl(scope.system, &["disable", "--now", &name]) {
            eprintln!("note: {e:#}");
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} is not installed ({} does not exist)", scope.name, path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    if systemd_booted() {
        systemctl(scope.system, &["daemon-reload"])?;
    }
    println!("the node's data directory is kept; delete it yourself if you want it gone");
    Ok(())
}

fn status(scope: &ScopeArgs) -> Result<()> {
    let path = unit_path(scope)?;
    let installed = path.is_file();
    println!("unit      {}", path.display());
    println!("installed {}", if installed { "yes" } else { "no" });
    if installed && let Some(line) = exec_line(&std::fs::read_to_string(&path)?) {
        println!("runs      {line}");
    }
    if !systemd_booted() {
        println!("systemd   not running on this machine");
        return Ok(());
    }
    let name = format!("{}.service", scope.name);
    // `is-active` and `is-enabled` answer non-zero for "inactive" and "disabled": show the word.
    for (what, verb) in [("active", "is-active"), ("enabled", "is-enabled")] {
        let word = match systemctl(scope.system, &[verb, &name]) {
            Ok(w) => w,
            Err(e) => e.to_string().rsplit(": ").next().unwrap_or("unknown").to_owned(),
        };
        println!("{what:<9} {word}");
    }
    println!("log       journalctl{} -u {} -f", scope_flag(scope.system), scope.name);
    Ok(())
}

fn exec_line(unit: &str) -> Option<&str> {
    unit.lines().find_map(|l| l.strip_prefix("ExecStart="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UnitSpec {
        UnitSpec {
            system: false,
            binary: "/usr/local/bin/starling".into(),
            data_dir: Some("/home/v/starling data".into()),
            config: None,
            run_as: None,
            up_args: vec!["--listen".into(), "/ip4/0.0.0.0/tcp/4001".into()],
        }
    }

    #[test]
    fn words_are_quoted_for_systemd() {
        assert_eq!(quote("/usr/bin/starling"), "/usr/bin/starling");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("100%"), "100%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote("a\\b"), "\"a\\\\b\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn a_user_unit_runs_up_with_absolute_paths_and_restarts_on_failure() {
        let u = render(&spec());
        assert!(u.contains(
            "ExecStart=/usr/local/bin/starling up --data-dir \"/home/v/starling data\" \
             --listen /ip4/0.0.0.0/tcp/4001\n"
        ));
        assert!(u.contains("Restart=on-failure\n"));
        assert!(u.contains("KillSignal=SIGTERM\n"));
        assert!(u.contains("WantedBy=default.target\n"));
        assert!(!u.contains("DynamicUser"));
    }

    #[test]
    fn a_system_unit_uses_a_dynamic_user_or_the_one_named() {
        let mut s = spec();
        s.system = true;
        s.data_dir = None;
        let u = render(&s);
        assert!(u.contains("--data-dir %S/starling"));
        assert!(u.contains("DynamicUser=yes\nStateDirectory=starling\n"));
        assert!(u.contains("WantedBy=multi-user.target\n"));
        s.run_as = Some("vol".into());
        s.data_dir = Some("/srv/starling".into());
        let u = render(&s);
        assert!(u.contains("User=vol\n") && !u.contains("DynamicUser"));
    }

    #[test]
    fn unit_names_are_checked() {
        assert_eq!(parse_name("starling").unwrap(), "starling");
        assert_eq!(parse_name("starling-2.service").unwrap(), "starling-2");
        assert!(parse_name("").is_err());
        assert!(parse_name("../x").is_err());
        assert!(parse_name("a b").is_err());
    }
}
