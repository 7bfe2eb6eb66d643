//! The one rule for names people give things (projects, users, servers, images, networks, pools).

/// Why `name` is not acceptable as the name of a `kind`, if it is not: 1 to 255 characters, printable, not
/// only spaces.
pub fn name_problem(kind: &str, name: &str) -> Option<String> {
    let acceptable = !name.trim().is_empty() && name.len() <= 255 && !name.chars().any(char::is_control);
    (!acceptable).then(|| format!("A {kind} name must be 1 to 255 printable characters, not only spaces."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_printable_and_not_blank() {
        for (name, ok) in [("web-1", true), ("", false), ("   ", false), ("a\nb", false), (&"x".repeat(256), false)] {
            assert_eq!(name_problem("server", name).is_none(), ok, "{name:?}");
        }
    }
}
