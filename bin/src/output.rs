//! How the commands print what the API answered: JSON values as table cells, and tables.

use serde_json::Value;

/// A JSON value as a table cell: strings unquoted, null empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub fn print_table(rows: &Value, columns: &[&str]) {
    let rows = rows.as_array().cloned().unwrap_or_default();
    let cell = |row: &Value, c: &str| text(&row[c]);
    let widths: Vec<usize> =
        columns.iter().map(|c| rows.iter().map(|r| cell(r, c).len()).chain([c.len()]).max().unwrap_or(0)).collect();
    let line =
        |cells: Vec<String>| cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
    println!("{}", line(columns.iter().map(|c| c.to_string()).collect()));
    for row in &rows {
        println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
}

/// How one reconciler of an actor is doing: `dataplane: 12 runs, 1 error (0 in a row), last run 2 s ago`, and
/// its last error if it ever failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcilerLine {
    pub summary: String,
    pub last_error: Option<String>,
}

/// The reconcilers of one actor of `GET /admin/actors`.
pub fn reconciler_lines(actor: &Value) -> Vec<ReconcilerLine> {
    let now = nimbus_storage::records::now_ms();
    let Some(reconcilers) = actor["reconcilers"].as_object() else { return Vec::new() };
    reconcilers
        .iter()
        .map(|(kind, s)| {
            let count = |key: &str| s[key].as_u64().unwrap_or(0);
            let plural = |n: u64, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
            let ago = s["last_run_ms"]
                .as_u64()
                .map_or("never run".into(), |at| format!("last run {} s ago", now.saturating_sub(at) / 1000));
            let summary = format!(
                "{kind}: {}, {} ({} in a row), {ago}",
                plural(count("runs"), "run"),
                plural(count("errors"), "error"),
                count("consecutive_errors")
            );
            ReconcilerLine { summary, last_error: s["last_error"].as_str().map(String::from) }
        })
        .collect()
}
