//! File modes: what the `restricted` Landlock domain costs an `open()` + `read()` at two
//! path depths, alone and in a real `leash run` task, and exec under `restricted`
//! against `open`.

use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::Context as _;
use harness::{daemon::DaemonGuard, probe};

use super::{median, range, run_probe};

/// A file at depth 2 (`/tmp/F`) and one at depth 10 (`/tmp/D/a/.../F`), removed on drop.
struct Files {
    shallow: PathBuf,
    dir: PathBuf,
    deep: PathBuf,
}

impl Files {
    fn new() -> anyhow::Result<Self> {
        let tmp = std::fs::canonicalize("/tmp")?;
        let tag = format!("leash-bench-files-{}", std::process::id());
        let shallow = tmp.join(format!("{tag}-f"));
        let dir = tmp.join(&tag);
        let parent = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .fold(dir.clone(), |p, c| p.join(c));
        std::fs::create_dir_all(&parent)?;
        let deep = parent.join("f");
        for f in [&shallow, &deep] {
            std::fs::write(f, [b'x'; 1024])?;
        }
        anyhow::ensure!(
            shallow.components().count() == 3 && deep.components().count() == 11,
            "depths: {} {}",
            shallow.display(),
            deep.display()
        );
        Ok(Self { shallow, dir, deep })
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shallow);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ratio(num: &[f64], den: &[f64]) -> String {
    let r: Vec<f64> = num.iter().zip(den).map(|(a, b)| a / b).collect();
    let (lo, hi) = range(&r);
    format!("{:.3}× ({lo:.2}–{hi:.2})", median(&r))
}

fn ns(v: &[f64]) -> String {
    format!("{:.0} ns", median(v))
}

/// `open()` + `read()` untagged, under the domain alone and in a `restricted` task;
/// fork + exec + wait untagged and in `open` and `restricted` tasks. All interleaved.
pub(super) fn file_modes(rounds: usize, quick: bool) -> anyhow::Result<String> {
    let files = Files::new().context("create the benchmark's files")?;
    let d = DaemonGuard::start("bench-files", "");
    let probe_path = probe().display().to_string();
    let (shallow, deep) = (
        files.shallow.display().to_string(),
        files.deep.display().to_string(),
    );
    let grants = format!("{shallow},{}", files.dir.display());
    let n_open = if quick { "20000" } else { "200000" };
    let n_exec = if quick { "50" } else { "300" };
    // The probe as the command of a new `leash run` task in `mode`.
    let task = |mode: &str| {
        let mut c = d.cli();
        c.args([
            "run",
            "--files",
            mode,
            "--allow-exec",
            &probe_path,
            "--allow-exec",
        ])
        .arg("/bin/true")
        .args(["--allow-read", &shallow, "--allow-read"])
        .arg(&files.dir)
        .args(["--", &probe_path]);
        c
    };
    // [depth 2, depth 10] x [untagged, domain alone, restricted task]; exec x [untagged,
    // open task, restricted task].
    let mut open: [[Vec<f64>; 3]; 2] = Default::default();
    let mut exec: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        eprintln!("file modes round {}/{rounds}", round + 1);
        for (i, file) in [&shallow, &deep].into_iter().enumerate() {
            let words = ["bench-open".to_owned(), file.clone(), n_open.into()];
            open[i][0].push(run_probe(&mut Command::new(probe()), &words)?);
            let alone = [
                "restricted-bench".to_owned(),
                grants.clone(),
                "open".into(),
                file.clone(),
                n_open.into(),
            ];
            open[i][1].push(run_probe(&mut Command::new(probe()), &alone)?);
            open[i][2].push(run_probe(&mut task("restricted"), &words)?);
        }
        let words = ["bench", "exec", "/bin/true", n_exec].map(str::to_owned);
        exec[0].push(run_probe(&mut Command::new(probe()), &words)?);
        exec[1].push(run_probe(&mut task("open"), &words)?);
        exec[2].push(run_probe(&mut task("restricted"), &words)?);
    }
    let mut md = String::new();
    writeln!(
        md,
        "## 8. File modes: open() + read() under `restricted`, exec under `restricted` against `open`\n"
    )?;
    writeln!(
        md,
        "{rounds} rounds, the states interleaved in each; medians of per-round values, ratios taken in the same round (median, min–max). `open()` + one 4 KiB `read()` + `close()` of a 1 KiB file, {n_open} per run; the file at depth 2 is `/tmp/F`, the one at depth 10 `/tmp/D/a/b/c/d/e/f/g/F`, granted `read:` (`/tmp/F` and `/tmp/D`). \"Domain alone\": the probe applies the `restricted` domain (the config's default base sets and those grants) to itself, with no task; \"task\": the probe is the command of `leash run --files restricted` (Landlock and the eBPF programs a tagged process meets).\n"
    )?;
    writeln!(
        md,
        "| open + read + close | untagged | domain alone | `restricted` task | domain ratio | task ratio |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for (i, name) in ["depth 2", "depth 10"].iter().enumerate() {
        let [untagged, alone, in_task] = &open[i];
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            ns(untagged),
            ns(alone),
            ns(in_task),
            ratio(alone, untagged),
            ratio(in_task, untagged)
        )?;
    }
    let [untagged, open_task, restricted_task] = &exec;
    writeln!(
        md,
        "\n| fork + exec + wait of /bin/true ({n_exec} per run) | untagged | `open` task | `restricted` task | `restricted` / `open` |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    writeln!(
        md,
        "| time | {} | {} | {} | {} |\n",
        ns(untagged),
        ns(open_task),
        ns(restricted_task),
        ratio(restricted_task, open_task)
    )?;
    Ok(md)
}
