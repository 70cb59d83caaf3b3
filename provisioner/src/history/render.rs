//! `history` results as terminal lines (the CLI prints them; `--output json` prints the
//! structs themselves).

use super::{DriftRow, RunDetail, RunDiff, RunRow, Side};

/// `12.3s`, `4m05s`, `-` when unknown.
fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    }
}

fn exit(r: &RunRow) -> String {
    match (r.exit_code, &r.ended) {
        (Some(c), _) => c.to_string(),
        (None, None) => "running?".into(),
        (None, Some(_)) => "-".into(),
    }
}

/// Rows as columns padded to the widest cell (the last column unpadded).
fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
}

fn command(r: &RunRow) -> String {
    let mut c = r.command.clone();
    if r.mode == "check" && r.command != "plan" {
        c.push_str(" (check)");
    }
    if r.parent.is_some() {
        c = format!("  {c}");
    }
    c
}

/// `history list`.
pub fn list(runs: &[RunRow]) -> Vec<String> {
    let mut rows = vec![vec![
        "RUN".to_string(),
        "COMMAND".into(),
        "STARTED".into(),
        "DURATION".into(),
        "EXIT".into(),
        "HOSTS CHANGED".into(),
    ]];
    for r in runs {
        rows.push(vec![
            r.id.clone(),
            command(r),
            r.started.clone(),
            duration(r.duration_ms),
            exit(r),
            r.hosts_changed.to_string(),
        ]);
    }
    table(&rows)
}

/// `history show`.
pub fn show(d: &RunDetail) -> Vec<String> {
    let r = &d.run;
    let mut out = vec![
        format!("run {}: {}", r.id, command(r).trim_start()),
        format!(
            "  started {} by {} on {}; ended {}; duration {}; exit {}{}",
            r.started,
            r.user,
            r.machine,
            r.ended.as_deref().unwrap_or("-"),
            duration(r.duration_ms),
            exit(r),
            if r.cancelled { " (cancelled)" } else { "" }
        ),
        format!(
            "  inventory {}{}",
            r.inventory,
            r.limit
                .as_ref()
                .map(|l| format!(", limit {l}"))
                .unwrap_or_default()
        ),
    ];
    if let Some(p) = &r.parent {
        out.push(format!("  a step of run {p}"));
    }
    if let Some(v) = &r.bundle_versions {
        let v: Vec<String> = v.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push(format!("  bundle: {}", v.join(", ")));
    }
    for s in &d.steps {
        let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
        out.push(format!(
            "  step {} {} {}: {}",
            text("time"),
            text("phase"),
            text("status"),
            text("message")
        ));
    }
    if !d.tasks.is_empty() {
        let mut rows = vec![vec![
            "HOST".to_string(),
            "TASK".into(),
            "STATUS".into(),
            "DURATION".into(),
            "DIFF".into(),
        ]];
        for t in d.tasks.iter().filter(|t| t.item.is_none()) {
            rows.push(vec![
                t.host.clone(),
                if t.handler {
                    format!("{} (handler)", t.task)
                } else {
                    t.task.clone()
                },
                t.status.clone(),
                duration(Some(t.duration_ms)),
                t.diff_hash
                    .as_deref()
                    .map(|h| h[..h.len().min(12)].to_string())
                    .unwrap_or_default(),
            ]);
        }
        out.extend(table(&rows).into_iter().map(|l| format!("  {l}")));
    }
    if !d.children.is_empty() {
        out.push("  runs it started:".into());
        out.extend(list(&d.children).into_iter().map(|l| format!("  {l}")));
    }
    out
}

fn side(s: &Option<Side>) -> String {
    match s {
        None => "(not run)".into(),
        Some(s) => {
            let mut t = s.status.clone();
            if let Some(h) = &s.diff_hash {
                t.push_str(&format!(" diff {}", &h[..h.len().min(12)]));
            }
            t
        }
    }
}

/// `history diff`.
pub fn diff(d: &RunDiff) -> Vec<String> {
    let mut out = vec![
        format!("a: {} {} {}", d.a.id, d.a.command, d.a.started),
        format!("b: {} {} {}", d.b.id, d.b.command, d.b.started),
    ];
    if d.tasks.is_empty() {
        out.push("no task differs".into());
        return out;
    }
    let mut rows = vec![vec![
        "HOST".to_string(),
        "TASK".into(),
        "A".into(),
        "B".into(),
    ]];
    for t in &d.tasks {
        let task = match &t.item {
            Some(i) => format!("{} (item {i})", t.task),
            None => t.task.clone(),
        };
        rows.push(vec![t.host.clone(), task, side(&t.a), side(&t.b)]);
    }
    out.extend(table(&rows));
    out
}

/// `history drift`.
pub fn drift(rows: &[DriftRow]) -> Vec<String> {
    if rows.is_empty() {
        return vec!["no change recorded in that time".into()];
    }
    let mut t = vec![vec![
        "TIME".to_string(),
        "HOST".into(),
        "TASK".into(),
        "WHAT".into(),
        "RUN".into(),
    ]];
    for r in rows {
        t.push(vec![
            r.time.clone(),
            r.host.clone(),
            r.task.clone(),
            if r.mode == "check" {
                "would change".into()
            } else {
                "changed".into()
            },
            format!("{} ({})", r.run, r.command),
        ]);
    }
    table(&t)
}
