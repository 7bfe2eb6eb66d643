//! `nimbus actors …`: the scriptable side of the debug console — list the live actor tree, kill or stop an
//! actor, follow supervision events.

use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::args::ApiArgs;
use crate::output::{reconciler_lines, text};

#[derive(Subcommand, Debug)]
pub enum ActorsCommand {
    /// List the actor tree (live, from the running cloud).
    Ls {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Kill an actor (its supervisor restarts it), e.g. `scheduler` or `compute/host-0002`.
    Kill {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop an actor gracefully (a permanent child is restarted too).
    Stop {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print supervision events: failures, restarts, escalations.
    Events {
        /// Keep printing new events until interrupted.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub async fn run(command: ActorsCommand) -> anyhow::Result<()> {
    match command {
        ActorsCommand::Ls { json, api } => {
            let client = api.login().await?;
            let listed = client.get("/admin/actors").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                print_tree(&listed["tree"]);
                println!("({}; mailbox depth {})", text(&listed["source"]), text(&listed["mailbox_depth"]));
            }
            Ok(())
        }
        ActorsCommand::Kill { name, api } => {
            let client = api.login().await?;
            client.post("/admin/actors/kill", &json!({"name": name})).await?;
            println!("killed {name}");
            Ok(())
        }
        ActorsCommand::Stop { name, api } => {
            let client = api.login().await?;
            client.post("/admin/actors/stop", &json!({"name": name})).await?;
            println!("stopped {name}");
            Ok(())
        }
        ActorsCommand::Events { follow, api } => {
            let client = api.login().await?;
            let mut after = 0;
            loop {
                let listed = client.get(&format!("/admin/events?after={after}")).await?;
                for e in listed["events"].as_array().into_iter().flatten() {
                    after = after.max(e["seq"].as_u64().unwrap_or(0));
                    let at = humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + Duration::from_millis(e["at_ms"].as_u64().unwrap_or(0)),
                    );
                    println!(
                        "{at}  {:<10} {:<40} (under {}) {}",
                        text(&e["kind"]),
                        text(&e["child"]),
                        text(&e["supervisor"]),
                        text(&e["detail"])
                    );
                }
                if !follow {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn print_tree(root: &Value) {
    println!(
        "{:<56} {:<16} {:<9} {:>8} {:>9} {:>9}  LAST ERROR",
        "ACTOR", "KIND", "STATUS", "RESTARTS", "MESSAGES", "UPTIME"
    );
    fn walk(node: &Value, depth: usize) {
        let name = format!("{}{}", "  ".repeat(depth), text(&node["name"]));
        let error = node["last_error"].as_array().map(|e| text(&e[1])).unwrap_or_default();
        let status = if node["unreachable"] == true { "NO ANSWER".to_string() } else { text(&node["status"]) };
        println!(
            "{name:<56} {:<16} {status:<9} {:>8} {:>9} {:>8}s  {error}",
            text(&node["kind"]),
            text(&node["restarts"]),
            text(&node["messages"]),
            text(&node["uptime_secs"]),
        );
        let indent = "  ".repeat(depth);
        for reconciler in reconciler_lines(node) {
            println!("{indent}  ↳ {}", reconciler.summary);
            if let Some(error) = reconciler.last_error {
                println!("{indent}      last error: {error}");
            }
        }
        for child in node["children"].as_array().into_iter().flatten() {
            walk(child, depth + 1);
        }
    }
    walk(root, 0);
}
