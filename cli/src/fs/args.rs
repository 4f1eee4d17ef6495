//! The shell's arguments: HDFS spells its options `-ls`, which clap cannot, so the words after
//! `crail fs` are parsed here into an [`Op`].

use anyhow::bail;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Commands: -ls [-R] [-b] [PATH...] | -mkdir [-p] PATH... | -put|-copyFromLocal [-f] \
                  LOCAL... DEST | -get|-copyToLocal [-f] PATH... LOCAL | -cat PATH... | \
                  -rm [-r] [-f] PATH... | -mv FROM TO | -stat PATH... | -du [-s] [-b] [PATH...] | \
                  -df [-b]"
)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(super) client: crate::ClientArgs,
    /// The command and its arguments, e.g. -ls -R /data.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 1..,
        value_name = "COMMAND"
    )]
    pub(super) words: Vec<String>,
}

/// Copies at least this large show a progress bar (on a terminal only).
pub(super) const PROGRESS_MIN: u64 = 64 << 20;

#[derive(Debug)]
pub(super) enum Op {
    Ls {
        recursive: bool,
        paths: Vec<String>,
    },
    Mkdir {
        parents: bool,
        paths: Vec<String>,
    },
    Put {
        force: bool,
        sources: Vec<String>,
        dest: String,
    },
    Get {
        force: bool,
        sources: Vec<String>,
        dest: String,
    },
    Cat {
        paths: Vec<String>,
    },
    Rm {
        recursive: bool,
        force: bool,
        paths: Vec<String>,
    },
    Mv {
        from: String,
        to: String,
    },
    Stat {
        paths: Vec<String>,
    },
    Du {
        summary: bool,
        paths: Vec<String>,
    },
    Df,
}

/// A parsed command line: the operation and how to print sizes.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) op: Op,
    pub(super) bytes: bool,
}

const COMMANDS: &str = "-ls, -mkdir, -put, -get, -cat, -rm, -mv, -stat, -du, -df";

pub(super) fn parse(words: &[String]) -> anyhow::Result<Parsed> {
    let Some((command, rest)) = words.split_first() else {
        bail!("crail fs needs a command: {COMMANDS}");
    };
    let name = command.trim_start_matches('-');
    let allowed: &[&str] = match name {
        "ls" => &["R", "b", "h"],
        "mkdir" => &["p"],
        "put" | "copyFromLocal" | "get" | "copyToLocal" => &["f"],
        "rm" => &["r", "R", "f"],
        "du" => &["s", "b", "h"],
        "df" => &["b", "h"],
        "cat" | "mv" | "stat" => &[],
        _ => bail!("fs: unknown command {command} (commands: {COMMANDS})"),
    };
    let mut flags = Vec::new();
    let mut raw = Vec::new();
    for word in rest {
        match word.strip_prefix('-') {
            Some(flag) if !flag.is_empty() && raw.is_empty() => {
                if !allowed.contains(&flag) {
                    bail!("fs -{name}: unknown option {word}");
                }
                flags.push(flag);
            }
            _ => raw.push(word.clone()),
        }
    }
    let has = |f: &str| flags.contains(&f);
    let need = |n: usize, what: &str| -> anyhow::Result<()> {
        if raw.len() < n {
            bail!("fs -{name} needs {what}");
        }
        Ok(())
    };
    // Store paths are normalized; local paths (of -put and -get) are taken as written.
    let store_paths = |words: &[String]| words.iter().map(|w| normalize(w)).collect::<Vec<_>>();
    let mut args = store_paths(&raw);
    let op = match name {
        "ls" => Op::Ls {
            recursive: has("R"),
            paths: or_root(args),
        },
        "mkdir" => {
            need(1, "a path")?;
            Op::Mkdir {
                parents: has("p"),
                paths: args,
            }
        }
        "put" | "copyFromLocal" => {
            need(2, "a source and a destination")?;
            let dest = args.pop().unwrap_or_default();
            raw.pop();
            Op::Put {
                force: has("f"),
                sources: raw,
                dest,
            }
        }
        "get" | "copyToLocal" => {
            need(2, "a source and a destination")?;
            args.pop();
            let dest = raw.pop().unwrap_or_default();
            Op::Get {
                force: has("f"),
                sources: args,
                dest,
            }
        }
        "cat" => {
            need(1, "a path")?;
            Op::Cat { paths: args }
        }
        "rm" => {
            need(1, "a path")?;
            Op::Rm {
                recursive: has("r") || has("R"),
                force: has("f"),
                paths: args,
            }
        }
        "mv" => {
            if args.len() != 2 {
                bail!("fs -mv needs a source and a destination");
            }
            let to = args.pop().unwrap_or_default();
            let from = args.pop().unwrap_or_default();
            Op::Mv { from, to }
        }
        "stat" => {
            need(1, "a path")?;
            Op::Stat { paths: args }
        }
        "du" => Op::Du {
            summary: has("s"),
            paths: or_root(args),
        },
        _ => {
            if !args.is_empty() {
                bail!("fs -df takes no paths");
            }
            Op::Df
        }
    };
    Ok(Parsed {
        op,
        bytes: has("b"),
    })
}

fn or_root(paths: Vec<String>) -> Vec<String> {
    if paths.is_empty() {
        vec!["/".into()]
    } else {
        paths
    }
}

/// Store paths are absolute; `data/x` means `/data/x`, and a trailing slash is dropped.
fn normalize(path: &str) -> String {
    if path == "-" {
        return path.to_owned();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}
