//! Shell completions and man pages, generated from the clap definition in `cli.rs` (so they
//! cannot drift from the real flags). Returns text; `cli.rs` prints it.

use clap::CommandFactory;
pub use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::Error;

/// The command tree as the binary sees it (built, so subcommands carry `provisioner-apply`
/// style display names), without clap's implicit `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> String {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "provisioner", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The man page (roff) of `provisioner` with no path, else of the subcommand at `path`
/// (`["lab", "up"]` gives provisioner-lab-up(1)); the top page lists its subcommands by those
/// names.
pub fn man_page(path: &[String]) -> Result<String, Error> {
    let mut cmd = command();
    for (i, name) in path.iter().enumerate() {
        let names: Vec<String> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect();
        cmd = match cmd.find_subcommand(name) {
            Some(sub) if !sub.is_hide_set() => sub.clone(),
            _ if names.is_empty() => {
                return Err(Error::Usage(format!(
                    "`provisioner {}` has no subcommands",
                    path[..i].join(" ")
                )))
            }
            _ => {
                return Err(Error::Usage(format!(
                    "no subcommand `{name}` in `provisioner {}`; one of: {}",
                    path[..i].join(" "),
                    names.join(", ")
                )))
            }
        };
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .source(format!("provisioner {}", env!("CARGO_PKG_VERSION")))
        .render(&mut out)
        .map_err(|e| Error::Usage(format!("cannot render the man page: {e}")))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Every visible subcommand path, depth first (`["lab"]`, `["lab", "up"]`, ...): the pages
/// `man_page` can render besides the top one.
pub fn subcommand_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut p = prefix.to_vec();
            p.push(sub.get_name().to_string());
            out.push(p.clone());
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&command(), &[], &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page_named_after_its_path() {
        let paths = subcommand_paths();
        assert!(paths
            .iter()
            .any(|p| p == &["lab".to_string(), "up".to_string()]));
        for p in paths {
            let page = man_page(&p).expect("renders");
            let title = format!("provisioner-{}", p.join("-"));
            assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
            assert!(page.contains(&title), "{title} not in its page");
        }
    }

    #[test]
    fn an_unknown_page_is_a_usage_error_naming_the_choices() {
        let e = man_page(&["nope".to_string()]).expect_err("unknown");
        let msg = e.to_string();
        assert!(msg.contains("`nope`") && msg.contains("apply"), "{msg}");
        let e = man_page(&["version".into(), "x".into()]).expect_err("leaf");
        assert!(e.to_string().contains("has no subcommands"), "{e}");
    }
}
