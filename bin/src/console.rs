//! `nimbus console`: an interactive terminal view of the running actor system, in the spirit of Erlang's
//! observer — the live actor tree with sortable columns, a details pane, a live event log, filtering, and
//! kill with confirmation. The view (`Console`) is plain state driven by keys and data, so it is tested
//! headless; `run` only feeds it from the API and draws it on the terminal.

use std::time::{Duration, Instant};

use nimbus_protocol::failure::chain;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use serde_json::Value;

use crate::args::ApiArgs;
use crate::output::{ReconcilerLine, reconciler_lines, text};

/// One actor, flattened out of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorRow {
    pub depth: usize,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub supervisor: String,
    pub restarts: u64,
    pub messages: u64,
    pub uptime_secs: u64,
    pub last_error: String,
    /// How its reconcilers are doing.
    pub reconcilers: Vec<ReconcilerLine>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Tree,
    Name,
    Restarts,
    Messages,
    Uptime,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Tree => Sort::Name,
            Sort::Name => Sort::Restarts,
            Sort::Restarts => Sort::Messages,
            Sort::Messages => Sort::Uptime,
            Sort::Uptime => Sort::Tree,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    Normal,
    Filter,
    ConfirmKill(String),
}

/// What the key asks the caller to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    Kill(String),
}

pub struct Console {
    rows: Vec<ActorRow>,
    events: Vec<String>,
    selected: usize,
    sort: Sort,
    filter: String,
    mode: Mode,
    /// The last thing that happened (a refresh, a kill, an error), shown at the bottom.
    pub status: String,
    source: String,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            rows: Vec::new(),
            events: Vec::new(),
            selected: 0,
            sort: Sort::Tree,
            filter: String::new(),
            mode: Mode::Normal,
            status: "q quit · ↑↓ select · s sort · / filter · k kill".into(),
            source: String::new(),
        }
    }
}

impl Console {
    /// Takes a fresh `GET /admin/actors` answer.
    pub fn set_actors(&mut self, listed: &Value) {
        fn walk(node: &Value, depth: usize, out: &mut Vec<ActorRow>) {
            let status = if node["unreachable"] == true { "NO ANSWER".to_string() } else { text(&node["status"]) };
            out.push(ActorRow {
                depth,
                name: text(&node["name"]),
                kind: text(&node["kind"]),
                status,
                supervisor: text(&node["supervisor"]),
                restarts: node["restarts"].as_u64().unwrap_or(0),
                messages: node["messages"].as_u64().unwrap_or(0),
                uptime_secs: node["uptime_secs"].as_u64().unwrap_or(0),
                last_error: node["last_error"].as_array().map(|e| text(&e[1])).unwrap_or_default(),
                reconcilers: reconciler_lines(node),
            });
            for child in node["children"].as_array().into_iter().flatten() {
                walk(child, depth + 1, out);
            }
        }
        let selected = self.visible().get(self.selected).map(|r| r.name.clone());
        self.rows.clear();
        walk(&listed["tree"], 0, &mut self.rows);
        self.source = format!("{}; mailbox depth {}", text(&listed["source"]), text(&listed["mailbox_depth"]));
        // Keep the selection on the same actor across refreshes.
        if let Some(name) = selected {
            self.selected = self.visible().iter().position(|r| r.name == name).unwrap_or(0);
        }
    }

    /// Takes new events from `GET /admin/events`; keeps the last 200.
    pub fn push_events(&mut self, listed: &Value) {
        for e in listed["events"].as_array().into_iter().flatten() {
            let at = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(e["at_ms"].as_u64().unwrap_or(0)),
            );
            self.events.push(format!(
                "{at} {:<9} {} (under {}) {}",
                text(&e["kind"]),
                text(&e["child"]),
                text(&e["supervisor"]),
                text(&e["detail"])
            ));
        }
        let excess = self.events.len().saturating_sub(200);
        self.events.drain(..excess);
    }

    /// The rows shown: filtered by name or kind, in the chosen order.
    pub fn visible(&self) -> Vec<&ActorRow> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&ActorRow> = self
            .rows
            .iter()
            .filter(|r| {
                needle.is_empty() || r.name.to_lowercase().contains(&needle) || r.kind.to_lowercase().contains(&needle)
            })
            .collect();
        match self.sort {
            Sort::Tree => {}
            Sort::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
            Sort::Restarts => rows.sort_by(|a, b| b.restarts.cmp(&a.restarts).then(a.name.cmp(&b.name))),
            Sort::Messages => rows.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.name.cmp(&b.name))),
            Sort::Uptime => rows.sort_by(|a, b| a.uptime_secs.cmp(&b.uptime_secs).then(a.name.cmp(&b.name))),
        }
        rows
    }

    pub fn key(&mut self, code: KeyCode) -> Action {
        match self.mode.clone() {
            Mode::Filter => {
                match code {
                    KeyCode::Enter | KeyCode::Esc => self.mode = Mode::Normal,
                    KeyCode::Backspace => drop(self.filter.pop()),
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => {}
                }
                self.selected = 0;
                Action::None
            }
            Mode::ConfirmKill(name) => {
                self.mode = Mode::Normal;
                if code == KeyCode::Char('y') {
                    Action::Kill(name)
                } else {
                    self.status = format!("did not kill {name}");
                    Action::None
                }
            }
            Mode::Normal => match code {
                KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
                KeyCode::Down | KeyCode::Char('j') => {
                    self.selected = (self.selected + 1).min(self.visible().len().saturating_sub(1));
                    Action::None
                }
                KeyCode::Up => {
                    self.selected = self.selected.saturating_sub(1);
                    Action::None
                }
                KeyCode::Char('s') => {
                    self.sort = self.sort.next();
                    self.status = format!("sorted by {:?}", self.sort);
                    Action::None
                }
                KeyCode::Char('/') => {
                    self.mode = Mode::Filter;
                    Action::None
                }
                KeyCode::Char('k') => {
                    if let Some(row) = self.visible().get(self.selected) {
                        self.mode = Mode::ConfirmKill(row.name.clone());
                    }
                    Action::None
                }
                _ => Action::None,
            },
        }
    }

    pub fn render(&self, frame: &mut Frame<'_>) {
        let [top, details, log, bottom] =
            Layout::vertical([Constraint::Min(6), Constraint::Length(8), Constraint::Length(8), Constraint::Length(1)])
                .areas(frame.area());
        let visible = self.visible();
        let rows = visible.iter().map(|r| {
            let indent = if self.sort == Sort::Tree { "  ".repeat(r.depth) } else { String::new() };
            Row::new(vec![
                Cell::from(format!("{indent}{}", r.name)),
                Cell::from(r.kind.clone()),
                Cell::from(r.status.clone()),
                Cell::from(r.restarts.to_string()),
                Cell::from(r.messages.to_string()),
                Cell::from(format!("{}s", r.uptime_secs)),
            ])
        });
        let header = Row::new(["ACTOR", "KIND", "STATUS", "RESTARTS", "MESSAGES", "UPTIME"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        let title = format!(" actors ({} shown, sort {:?}, filter {:?}) ", visible.len(), self.sort, self.filter);
        let table = Table::new(
            rows,
            [
                Constraint::Percentage(45),
                Constraint::Length(16),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(9),
                Constraint::Length(8),
            ],
        )
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default().with_selected(Some(self.selected));
        frame.render_stateful_widget(table, top, &mut state);

        let detail = match visible.get(self.selected) {
            Some(r) => {
                let mut lines = vec![
                    Line::from(format!(
                        "{} ({}), under {}",
                        r.name,
                        r.kind,
                        if r.supervisor.is_empty() { "-" } else { &r.supervisor }
                    )),
                    Line::from(format!(
                        "status {}, {} restarts, {} messages, up {}s",
                        r.status, r.restarts, r.messages, r.uptime_secs
                    )),
                    Line::from(format!("last error: {}", if r.last_error.is_empty() { "none" } else { &r.last_error })),
                ];
                for reconciler in &r.reconcilers {
                    lines.push(Line::from(format!("reconciler {}", reconciler.summary)));
                    if let Some(error) = &reconciler.last_error {
                        lines.push(Line::from(format!("           last error: {error}")));
                    }
                }
                lines.push(Line::from(format!("source: {}", self.source)));
                lines
            }
            None => vec![Line::from("no actor selected")],
        };
        frame.render_widget(
            Paragraph::new(detail).block(Block::default().borders(Borders::ALL).title(" details ")),
            details,
        );
        let lines: Vec<Line> = self.events.iter().rev().take(6).rev().map(|e| Line::from(e.as_str())).collect();
        frame.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" events ")), log);
        let bottom_text = match &self.mode {
            Mode::Filter => format!("filter: {}▏ (Enter to apply)", self.filter),
            Mode::ConfirmKill(name) => format!("kill {name}? y/n"),
            Mode::Normal => self.status.clone(),
        };
        frame.render_widget(Paragraph::new(bottom_text), bottom);
    }
}

/// The interactive loop: refreshes once a second from the API; keys drive the view.
pub async fn run(api: ApiArgs) -> anyhow::Result<()> {
    let client = api.login().await?;
    let mut console = Console::default();
    let mut terminal = ratatui::init();
    let outcome = async {
        let mut after = 0u64;
        let mut refreshed = Instant::now() - Duration::from_secs(10);
        loop {
            if refreshed.elapsed() >= Duration::from_secs(1) {
                match client.get("/admin/actors").await {
                    Ok(listed) => console.set_actors(&listed),
                    Err(e) => console.status = format!("refresh failed: {}", chain(&e)),
                }
                if let Ok(events) = client.get(&format!("/admin/events?after={after}")).await {
                    after = events["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e["seq"].as_u64())
                        .fold(after, u64::max);
                    console.push_events(&events);
                }
                refreshed = Instant::now();
            }
            terminal.draw(|f| console.render(f))?;
            if event::poll(Duration::from_millis(100))?
                && let Event::Key(key) = event::read()?
                && key.kind == KeyEventKind::Press
            {
                match console.key(key.code) {
                    Action::Quit => return Ok::<_, anyhow::Error>(()),
                    Action::Kill(name) => {
                        console.status =
                            match client.post("/admin/actors/kill", &serde_json::json!({"name": name})).await {
                                Ok(_) => format!("killed {name}"),
                                Err(e) => format!("kill failed: {}", chain(&e)),
                            };
                        refreshed = Instant::now() - Duration::from_secs(10);
                    }
                    Action::None => {}
                }
            }
        }
    }
    .await;
    ratatui::restore();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn sample() -> Value {
        let actor = |name: &str, kind: &str, restarts: u64, messages: u64, children: Vec<Value>| {
            json!({"name": name, "kind": kind, "status": "Running", "restarts": restarts, "messages": messages,
                   "uptime_secs": 5, "last_error": if restarts > 0 { json!([0, "killed"]) } else { Value::Null },
                   "children": children, "supervisor": "cloud", "unreachable": false})
        };
        json!({"source": "live actors of this node", "mailbox_depth": "not reported", "tree": actor("cloud", "Supervisor", 0, 3, vec![
            actor("scheduler", "Scheduler", 2, 40, vec![]),
            json!({"name": "network", "kind": "NetworkManager", "status": "Running", "restarts": 0, "messages": 12,
                   "uptime_secs": 5, "last_error": null, "children": [], "supervisor": "cloud", "unreachable": false,
                   "reconcilers": {"dataplane": {"last_run_ms": null, "runs": 12, "errors": 3, "consecutive_errors": 2,
                                                 "last_error": "the public interface eth0 does not exist"}}}),
            actor("compute", "Supervisor", 0, 1, vec![
                actor("compute/host-0001", "ComputeAgent", 0, 7, vec![]),
                actor("compute/host-0002", "ComputeAgent", 5, 9, vec![]),
            ]),
        ])})
    }

    fn screen(console: &Console) -> String {
        let mut terminal = Terminal::new(TestBackend::new(110, 30)).unwrap();
        terminal.draw(|f| console.render(f)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| (0..buffer.area.width).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn shows_the_tree_with_details_and_events() {
        let mut console = Console::default();
        console.set_actors(&sample());
        console.push_events(&json!({"events": [{"seq": 1, "at_ms": 0, "kind": "Failed", "child": "scheduler", "supervisor": "cloud", "detail": "killed"}]}));
        let shown = screen(&console);
        assert!(
            shown.contains("cloud") && shown.contains("  scheduler") && shown.contains("    compute/host-0001"),
            "{shown}"
        );
        assert!(shown.contains("Failed") && shown.contains("killed"), "{shown}");
        assert!(shown.contains("cloud (Supervisor)"), "the details pane shows the selected actor:\n{shown}");
    }

    #[test]
    fn the_details_show_how_the_selected_actors_reconcilers_are_doing() {
        let mut console = Console::default();
        console.set_actors(&sample());
        console.key(KeyCode::Down);
        console.key(KeyCode::Down);
        let shown = screen(&console);
        assert!(shown.contains("network (NetworkManager)"), "{shown}");
        assert!(
            shown.contains("reconciler dataplane: 12 runs, 3 errors (2 in a row), never run")
                && shown.contains("           last error: the public interface eth0 does not exist"),
            "{shown}"
        );
    }

    #[test]
    fn sorts_filters_and_kills_only_after_confirmation() {
        let mut console = Console::default();
        console.set_actors(&sample());
        console.key(KeyCode::Char('s'));
        console.key(KeyCode::Char('s'));
        assert_eq!(console.sort, Sort::Restarts);
        assert_eq!(console.visible()[0].name, "compute/host-0002");
        console.key(KeyCode::Char('/'));
        for c in "host".chars() {
            console.key(KeyCode::Char(c));
        }
        console.key(KeyCode::Enter);
        let names: Vec<&str> = console.visible().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["compute/host-0002", "compute/host-0001"]);
        console.key(KeyCode::Down);
        assert_eq!(console.key(KeyCode::Char('k')), Action::None);
        assert!(screen(&console).contains("kill compute/host-0001? y/n"));
        assert_eq!(console.key(KeyCode::Char('n')), Action::None, "anything but y cancels");
        console.key(KeyCode::Char('k'));
        assert_eq!(console.key(KeyCode::Char('y')), Action::Kill("compute/host-0001".into()));
        assert_eq!(console.key(KeyCode::Char('q')), Action::Quit);
    }
}
