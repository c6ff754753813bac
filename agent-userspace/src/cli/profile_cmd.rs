//! `leash profile list` and `leash profile show NAME`.

use std::{fmt::Write as _, process::ExitCode};

use super::profile::{self, Profile, Source};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProfileCommand {
    /// The profiles, built-in and from the profiles directory (`$LEASH_PROFILES_DIR`,
    /// else /etc/leash/profiles), with what each is for.
    List,
    /// A profile's grants, each marked when its file is not on this machine (it is
    /// then left out of the task).
    Show {
        /// The profile's name.
        name: String,
    },
}

pub(crate) fn run(cmd: &ProfileCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProfileCommand::List => {
            let all = profile::all()?;
            let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in &all {
                let from = match &p.source {
                    Source::BuiltIn => String::new(),
                    Source::File(f) => format!(" [{}]", f.display()),
                };
                println!("{:width$}  {}{from}", p.name, p.description);
            }
        }
        ProfileCommand::Show { name } => print!("{}", show_text(&profile::load(name)?)),
    }
    Ok(ExitCode::SUCCESS)
}

fn show_text(p: &Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}: {}", p.name, p.description);
    if let Source::File(f) = &p.source {
        let _ = writeln!(out, "# from {}", f.display());
    }
    let lists = [
        ("exec", &p.grants.exec, true),
        ("connect", &p.grants.connect, false),
        ("files", &p.grants.files, true),
    ];
    for (key, list, files) in lists {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{key}:");
        for spec in list {
            let absent = files && !profile::present(spec);
            let note = if absent {
                "   # not on this machine"
            } else {
                ""
            };
            let _ = writeln!(out, "  - {spec}{note}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use leash::protocol::Grants;

    use super::*;

    #[test]
    fn show_marks_the_files_this_machine_lacks() {
        let p = Profile {
            name: "t".into(),
            description: "a test".into(),
            source: Source::BuiltIn,
            grants: Grants {
                exec: vec!["/".into(), "/nonexistent/tool".into()],
                connect: vec!["socket:netlink".into()],
                files: Vec::new(),
            },
        };
        assert_eq!(
            show_text(&p),
            "# t: a test\nexec:\n  - /\n  - /nonexistent/tool   # not on this machine\nconnect:\n  - socket:netlink\n"
        );
    }
}
