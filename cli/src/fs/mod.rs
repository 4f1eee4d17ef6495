//! `crail fs`: the file system shell, in the style of `hdfs dfs`.
//!
//! ```text
//! crail fs -ls [-R] [-b] [PATH...]        crail fs -put [-f] LOCAL... DEST
//! crail fs -mkdir [-p] PATH...            crail fs -get [-f] PATH... LOCAL
//! crail fs -cat PATH...                   crail fs -rm [-r] [-f] PATH...
//! crail fs -mv FROM TO                    crail fs -stat PATH...
//! crail fs -du [-s] [-b] [PATH...]        crail fs -df [-b]
//! ```
//!
//! Sizes print in binary units (`-b`: exact bytes). `-` is standard input for `-put` and
//! standard output for `-get`. Copies land under a temporary name (`.crail-part`) and are
//! renamed when complete, so an interrupted copy never leaves a truncated file under the
//! real name, on either side.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use bytes::BytesMut;
use crail_store::{ByteSize, Config, CreateOptions, Error, Node, NodeType, Store};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::table::Table;

mod args;

pub(crate) use args::Args;
use args::{Op, PROGRESS_MIN, parse};

pub(crate) async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    // Parse before connecting: a typo should not wait for a namenode.
    let parsed = parse(&args.words)?;
    let buffer = usize::try_from(config.client.buffer_size.bytes()).unwrap_or(1 << 20);
    let store = args.client.connect(config, "crail fs").await?;
    let shell = Shell {
        store,
        bytes: parsed.bytes,
        buffer: buffer.clamp(4096, 16 << 20),
    };
    match parsed.op {
        Op::Ls { recursive, paths } => shell.ls(&paths, recursive).await,
        Op::Mkdir { parents, paths } => {
            for path in &paths {
                shell.mkdir(path, parents).await?;
            }
            Ok(())
        }
        Op::Put {
            force,
            sources,
            dest,
        } => shell.put(&sources, &dest, force).await,
        Op::Get {
            force,
            sources,
            dest,
        } => shell.get(&sources, &dest, force).await,
        Op::Cat { paths } => {
            let mut out = tokio::io::stdout();
            for path in &paths {
                shell.copy_out(path, &mut out, None).await?;
            }
            out.flush().await?;
            Ok(())
        }
        Op::Rm {
            recursive,
            force,
            paths,
        } => {
            for path in &paths {
                match shell.store.delete(path, recursive).await {
                    Err(Error::NotFound { .. }) if force => {}
                    Err(Error::NotEmpty { path }) => {
                        bail!("{path}: not empty (-r deletes it with everything in it)")
                    }
                    other => other?,
                }
            }
            Ok(())
        }
        Op::Mv { from, to } => {
            let to = match shell.store.stat(&to).await {
                Ok(stat) if is_container(stat.node_type) => child_path(&to, base_name(&from)),
                _ => to,
            };
            Ok(shell.store.rename(&from, &to).await?)
        }
        Op::Stat { paths } => {
            for path in &paths {
                shell.stat(path).await?;
            }
            Ok(())
        }
        Op::Du { summary, paths } => shell.du(&paths, summary).await,
        Op::Df => shell.df().await,
    }
}

struct Shell {
    store: Store,
    /// Print exact byte counts instead of binary units.
    bytes: bool,
    /// Bytes per read or write.
    buffer: usize,
}

fn is_container(t: NodeType) -> bool {
    matches!(
        t,
        NodeType::Directory | NodeType::MultiFile | NodeType::Table
    )
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `YYYY-MM-DD HH:MM` in UTC.
fn time_text(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

impl Shell {
    fn size(&self, n: u64) -> String {
        if self.bytes {
            n.to_string()
        } else {
            ByteSize(n).to_string()
        }
    }

    async fn ls(&self, paths: &[String], recursive: bool) -> anyhow::Result<()> {
        let mut table = Table::new(&["type", "size", "modified", "path"]);
        for path in paths {
            let stat = self.store.stat(path).await?;
            if is_container(stat.node_type) {
                self.list_into(&mut table, path, recursive).await?;
            } else {
                self.ls_row(&mut table, path, &stat);
            }
        }
        print!("{}", table.render_body());
        Ok(())
    }

    fn ls_row(&self, table: &mut Table, path: &str, stat: &crail_store::Stat) {
        let size = if matches!(stat.node_type, NodeType::Directory | NodeType::Table) {
            "-".into()
        } else {
            self.size(stat.size)
        };
        table.row(vec![
            stat.node_type.to_string(),
            size,
            time_text(stat.modified),
            path.to_owned(),
        ]);
    }

    async fn list_into(&self, table: &mut Table, dir: &str, recursive: bool) -> anyhow::Result<()> {
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            let entries = self.store.list(&dir).await?;
            // Depth first, in name order: push subdirectories in reverse after printing.
            let mut below = Vec::new();
            for entry in entries {
                let path = child_path(&dir, &entry.name);
                self.ls_row(table, &path, &entry.stat);
                if recursive && is_container(entry.stat.node_type) {
                    below.push(path);
                }
            }
            stack.extend(below.into_iter().rev());
        }
        Ok(())
    }

    async fn mkdir(&self, path: &str, parents: bool) -> anyhow::Result<()> {
        if !parents {
            self.store
                .create_dir(path, &CreateOptions::default())
                .await?;
            return Ok(());
        }
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            match self.store.create_dir(&at, &CreateOptions::default()).await {
                Ok(_) => {}
                Err(Error::AlreadyExists { .. }) => {
                    let stat = self.store.stat(&at).await?;
                    if stat.node_type != NodeType::Directory {
                        bail!("{at}: exists and is a {}, not a directory", stat.node_type);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Where a copy into `dest` of something named `name` goes: into `dest` if it is an
    /// existing container, else `dest` itself.
    async fn store_target(&self, dest: &str, name: &str, many: bool) -> anyhow::Result<String> {
        match self.store.stat(dest).await {
            Ok(stat) if stat.node_type == NodeType::Directory => Ok(child_path(dest, name)),
            Ok(_) if many => bail!("{dest}: not a directory (copying several sources)"),
            Err(Error::NotFound { .. }) if many => bail!("{dest}: no such directory"),
            _ => Ok(dest.to_owned()),
        }
    }

    async fn put(&self, sources: &[String], dest: &str, force: bool) -> anyhow::Result<()> {
        let many = sources.len() > 1;
        for source in sources {
            if source == "-" {
                if many {
                    bail!("-put: standard input (-) must be the only source");
                }
                let target = self.store_target(dest, "stdin", false).await?;
                self.prepare_store_target(&target, force).await?;
                self.upload(&mut tokio::io::stdin(), &target, None).await?;
                continue;
            }
            let local = Path::new(source);
            let name = local
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{source}: not a file name"))?;
            let target = self.store_target(dest, name, many).await?;
            Box::pin(self.put_one(local, &target, force)).await?;
        }
        Ok(())
    }

    /// An existing target is an error, or deleted with `-f`.
    async fn prepare_store_target(&self, target: &str, force: bool) -> anyhow::Result<()> {
        match self.store.stat(target).await {
            Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
            Ok(_) if !force => bail!("{target}: already exists (-f replaces it)"),
            Ok(stat) => {
                self.store
                    .delete(target, is_container(stat.node_type))
                    .await?;
                Ok(())
            }
        }
    }

    async fn put_one(&self, local: &Path, target: &str, force: bool) -> anyhow::Result<()> {
        let meta = tokio::fs::metadata(local)
            .await
            .with_context(|| format!("{}: cannot read", local.display()))?;
        if meta.is_dir() {
            self.prepare_store_target(target, force).await?;
            self.store
                .create_dir(target, &CreateOptions::default())
                .await?;
            let mut entries = tokio::fs::read_dir(local)
                .await
                .with_context(|| format!("{}: cannot list", local.display()))?;
            let mut names = Vec::new();
            while let Some(entry) = entries.next_entry().await? {
                names.push(entry.file_name());
            }
            names.sort();
            for name in names {
                let child = name
                    .to_str()
                    .with_context(|| format!("{}: a name that is not UTF-8", local.display()))?
                    .to_owned();
                Box::pin(self.put_one(&local.join(&name), &child_path(target, &child), force))
                    .await?;
            }
            return Ok(());
        }
        self.prepare_store_target(target, force).await?;
        let mut file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("{}: cannot open", local.display()))?;
        self.upload(&mut file, target, Some(meta.len())).await
    }

    /// Streams `input` into a new file at `target`: under `target.crail-part`, renamed when
    /// closed; on any error nothing is left behind.
    async fn upload(
        &self,
        input: &mut (impl AsyncRead + Unpin),
        target: &str,
        size: Option<u64>,
    ) -> anyhow::Result<()> {
        let part = format!("{target}.crail-part");
        let _ = self.store.delete(&part, false).await;
        let lease = self
            .store
            .create_file(&part, &CreateOptions::default())
            .await?;
        let progress = progress(size, target);
        let copied = async {
            let mut writer = lease.writer();
            loop {
                let mut buf = BytesMut::with_capacity(self.buffer);
                while buf.len() < self.buffer {
                    if input.read_buf(&mut buf).await? == 0 {
                        break;
                    }
                }
                if buf.is_empty() {
                    break;
                }
                progress.inc(buf.len() as u64);
                writer.write_buffer(buf.freeze()).await?;
            }
            writer.close().await?;
            anyhow::Ok(())
        }
        .await;
        progress.finish_and_clear();
        if let Err(e) = copied {
            let _ = self.store.delete(&part, false).await;
            return Err(e.context(format!("{target}: copy failed, nothing written")));
        }
        self.store.rename(&part, target).await?;
        Ok(())
    }

    async fn get(&self, sources: &[String], dest: &str, force: bool) -> anyhow::Result<()> {
        let many = sources.len() > 1;
        if dest == "-" {
            let mut out = tokio::io::stdout();
            for source in sources {
                self.copy_out(source, &mut out, None).await?;
            }
            out.flush().await?;
            return Ok(());
        }
        let dest = Path::new(dest);
        let into_dir = dest.is_dir();
        if many && !into_dir {
            bail!(
                "{}: not a directory (copying several sources)",
                dest.display()
            );
        }
        for source in sources {
            let target = if into_dir {
                dest.join(base_name(source))
            } else {
                dest.to_owned()
            };
            Box::pin(self.get_one(source, &target, force)).await?;
        }
        Ok(())
    }

    async fn get_one(&self, source: &str, target: &Path, force: bool) -> anyhow::Result<()> {
        let stat = self.store.stat(source).await?;
        if matches!(stat.node_type, NodeType::Directory | NodeType::Table) {
            match tokio::fs::create_dir(target).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: cannot create", target.display()));
                }
            }
            for entry in self.store.list(source).await? {
                Box::pin(self.get_one(
                    &child_path(source, &entry.name),
                    &target.join(&entry.name),
                    force,
                ))
                .await?;
            }
            return Ok(());
        }
        if target.exists() && !force {
            bail!("{}: already exists (-f replaces it)", target.display());
        }
        let mut part = target.as_os_str().to_owned();
        part.push(".crail-part");
        let part = PathBuf::from(part);
        let mut file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("{}: cannot create", part.display()))?;
        let copied = async {
            self.copy_out(source, &mut file, Some(stat.size)).await?;
            file.sync_all().await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, target)
            .await
            .with_context(|| format!("{}: cannot rename into place", target.display()))?;
        Ok(())
    }

    /// Streams a file, keyvalue or multifile (its children as one stream) into `out`.
    async fn copy_out(
        &self,
        path: &str,
        out: &mut (impl AsyncWrite + Unpin),
        size: Option<u64>,
    ) -> anyhow::Result<()> {
        let progress = progress(size, path);
        let result = async {
            // A keyvalue is read through a hold, kept until the copy ends.
            let (_held, mut source) = match self.store.lookup(path).await? {
                Node::File(file) => (None, Source::File(file.reader())),
                Node::KeyValue(_) => {
                    let value = self.store.get(path).await?;
                    let reader = value.reader();
                    (Some(value), Source::File(reader))
                }
                Node::MultiFile(multi) => (None, Source::Multi(multi.reader().await?)),
                other => bail!("{path}: is a {}", other.node_type()),
            };
            while let Some(buf) = source.next_buffer().await? {
                out.write_all(&buf).await?;
                progress.inc(buf.len() as u64);
            }
            anyhow::Ok(())
        }
        .await;
        progress.finish_and_clear();
        result
    }

    async fn stat(&self, path: &str) -> anyhow::Result<()> {
        let stat = self.store.stat(path).await?;
        println!("{path}");
        println!("  type      {}", stat.node_type);
        println!("  size      {} ({} bytes)", ByteSize(stat.size), stat.size);
        if is_container(stat.node_type) {
            println!("  children  {}", stat.children);
        }
        if stat.block_count > 0 {
            let locations = self
                .store
                .block_locations(stat.file_id, 0, stat.block_count)
                .await?;
            let mut per_class: BTreeMap<u32, u64> = BTreeMap::new();
            let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
            for block in &locations {
                *per_class.entry(block.storage_class).or_default() += 1;
                *per_host.entry(block.host.to_string()).or_default() += 1;
            }
            fn join<K: std::fmt::Display>(m: &BTreeMap<K, u64>, label: &str) -> String {
                m.iter()
                    .map(|(k, n)| format!("{n} {label}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            println!(
                "  blocks    {} ({})",
                stat.block_count,
                join(&per_class, "in class ")
            );
            println!("  hosts     {}", join(&per_host, "on "));
        }
        println!("  created   {}", time_text(stat.created));
        println!("  modified  {}", time_text(stat.modified));
        Ok(())
    }

    /// Bytes under `path`: a file's size, a container's recursive sum.
    async fn total(&self, path: &str, stat: &crail_store::Stat) -> anyhow::Result<u64> {
        if !matches!(stat.node_type, NodeType::Directory | NodeType::Table) {
            return Ok(stat.size);
        }
        let mut sum = 0;
        for entry in self.store.list(path).await? {
            sum += Box::pin(self.total(&child_path(path, &entry.name), &entry.stat)).await?;
        }
        Ok(sum)
    }

    async fn du(&self, paths: &[String], summary: bool) -> anyhow::Result<()> {
        let mut table = Table::new(&["size", "path"]);
        for path in paths {
            let stat = self.store.stat(path).await?;
            if summary || !matches!(stat.node_type, NodeType::Directory | NodeType::Table) {
                let total = self.total(path, &stat).await?;
                table.row(vec![self.size(total), path.clone()]);
                continue;
            }
            for entry in self.store.list(path).await? {
                let child = child_path(path, &entry.name);
                let total = self.total(&child, &entry.stat).await?;
                table.row(vec![self.size(total), child]);
            }
        }
        print!("{}", table.render_body());
        Ok(())
    }

    async fn df(&self) -> anyhow::Result<()> {
        let info = self.store.cluster_info().await?;
        // (class, tier) -> (datanodes, capacity, used)
        let mut groups: BTreeMap<(u32, String), (u64, u64, u64)> = BTreeMap::new();
        for dn in info.datanodes.iter().filter(|d| d.alive) {
            let g = groups
                .entry((dn.storage_class, dn.tier.clone()))
                .or_default();
            g.0 += 1;
            g.1 += dn.capacity;
            g.2 += dn.used;
        }
        let mut table = Table::new(&[
            "tier",
            "class",
            "datanodes",
            "capacity",
            "used",
            "free",
            "use%",
        ]);
        let (mut n, mut cap, mut used) = (0, 0, 0);
        let percent = |used: u64, cap: u64| {
            if cap == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", used as f64 * 100.0 / cap as f64)
            }
        };
        for ((class, tier), (count, capacity, u)) in &groups {
            table.row(vec![
                tier.clone(),
                class.to_string(),
                count.to_string(),
                self.size(*capacity),
                self.size(*u),
                self.size(capacity.saturating_sub(*u)),
                percent(*u, *capacity),
            ]);
            n += count;
            cap += capacity;
            used += u;
        }
        table.row(vec![
            "total".into(),
            "-".into(),
            n.to_string(),
            self.size(cap),
            self.size(used),
            self.size(cap.saturating_sub(used)),
            percent(used, cap),
        ]);
        print!("{}", table.render());
        Ok(())
    }
}

/// What `copy_out` streams from: a file's (or keyvalue's) reader, or a multifile's.
enum Source {
    File(crail_store::FileReader),
    Multi(crail_store::MultiReader),
}

impl Source {
    async fn next_buffer(&mut self) -> crail_store::Result<Option<crail_store::Buffer>> {
        match self {
            Self::File(r) => r.next_buffer().await,
            Self::Multi(r) => r.next_buffer().await,
        }
    }
}

/// A progress bar on stderr for a copy of at least [`PROGRESS_MIN`] bytes when stderr is a
/// terminal; otherwise one that draws nothing.
fn progress(size: Option<u64>, name: &str) -> ProgressBar {
    match size {
        Some(size) if size >= PROGRESS_MIN && std::io::stderr().is_terminal() => {
            let bar = ProgressBar::new(size);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name.to_owned());
            bar
        }
        _ => ProgressBar::hidden(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_hdfs_style_commands() {
        let p = parse(&words("-ls -R data/")).unwrap();
        assert!(matches!(p.op, Op::Ls { recursive: true, ref paths } if paths == &["/data"]));
        let p = parse(&words("-put -f ./a.bin b.bin /dir")).unwrap();
        assert!(
            matches!(p.op, Op::Put { force: true, ref sources, ref dest }
                if sources == &["./a.bin", "b.bin"] && dest == "/dir"),
            "{p:?}"
        );
        let p = parse(&words("-copyToLocal /x ./y")).unwrap();
        assert!(
            matches!(p.op, Op::Get { force: false, ref sources, ref dest }
                if sources == &["/x"] && dest == "./y"),
            "{p:?}"
        );
        let p = parse(&words("-du -s -b")).unwrap();
        assert!(p.bytes);
        assert!(matches!(p.op, Op::Du { summary: true, ref paths } if paths == &["/"]));
        assert!(matches!(parse(&words("df")).unwrap().op, Op::Df));
    }

    #[test]
    fn refuses_bad_commands_with_one_line() {
        for (line, says) in [
            ("", "needs a command"),
            ("-frobnicate /", "unknown command -frobnicate"),
            ("-ls -x /", "unknown option -x"),
            ("-mv /a", "needs a source and a destination"),
            ("-put /a", "needs a source and a destination"),
            ("-mkdir", "needs a path"),
            ("-df /x", "takes no paths"),
        ] {
            let err = parse(&words(line)).unwrap_err().to_string();
            assert!(err.contains(says), "{line}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }

    #[test]
    fn dates_are_civil_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(time_text(t), "2026-11-18 11:06");
        assert_eq!(time_text(SystemTime::UNIX_EPOCH), "1970-01-01 00:00");
    }
}
