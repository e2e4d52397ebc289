//! Passwords from a no-echo prompt or standard input.

use super::error::CliError;
use hush_core::Secret;
use std::io::{BufRead, IsTerminal};

/// Where passwords come from: stdin lines (scripts) or a no-echo prompt (people).
pub(crate) struct Secrets {
    pub(crate) from_stdin: bool,
    lines: Option<std::io::Lines<std::io::StdinLock<'static>>>,
}

impl Secrets {
    pub(crate) fn new(from_stdin: bool) -> Self {
        Secrets {
            from_stdin,
            lines: None,
        }
    }

    pub(crate) fn ask(&mut self, what: &str) -> Result<Secret, CliError> {
        if self.from_stdin {
            let lines = self
                .lines
                .get_or_insert_with(|| std::io::stdin().lock().lines());
            return match lines.next() {
                Some(Ok(line)) => Ok(Secret::new(line)),
                Some(Err(source)) => Err(CliError::Input {
                    what: what.into(),
                    source,
                }),
                None => Err(CliError::Usage(format!(
                    "standard input ended before the {what}"
                ))),
            };
        }
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(format!(
                "no terminal to ask for the {what}; pass --stdin and give it on standard input"
            )));
        }
        rpassword::prompt_password(format!("{what}: "))
            .map(Secret::new)
            .map_err(|source| CliError::Input {
                what: what.into(),
                source,
            })
    }

    /// Asks twice on a terminal so a typo does not lock the user out.
    pub(crate) fn ask_new(&mut self, what: &str) -> Result<Secret, CliError> {
        let first = self.ask(what)?;
        if !self.from_stdin {
            let again = self.ask(&format!("{what} (again)"))?;
            if again != first {
                return Err(CliError::Usage(
                    "the two entries differ; nothing was changed".into(),
                ));
            }
        }
        Ok(first)
    }

    pub(crate) fn confirm(&mut self, question: &str, yes_flag: bool) -> Result<bool, CliError> {
        if yes_flag {
            return Ok(true);
        }
        if self.from_stdin || !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(format!(
                "{question} Pass --yes to confirm."
            )));
        }
        eprint!("{question} Type yes to continue: ");
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|source| CliError::Input {
                what: "confirmation".into(),
                source,
            })?;
        Ok(answer.trim().eq_ignore_ascii_case("yes"))
    }
}
