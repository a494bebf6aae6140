//! [`FakeRunner`]: a [`CommandRunner`] that answers from scripted rules and records what
//! it was asked to run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;
use crate::{Command, CommandOutput, CommandRunner, Error, Result};

type Handler = Arc<dyn Fn(&Command) -> CommandOutput + Send + Sync>;
type Matcher = Box<dyn Fn(&Command) -> bool + Send + Sync>;

struct Rule {
    matches: Matcher,
    handler: Handler,
}

/// A [`CommandRunner`] that answers from rules instead of running anything, and records
/// every command it was asked to run. The newest matching rule answers; a command no rule
/// matches is [`Error::CommandNotFound`]. Commands from several threads are answered
/// concurrently, as real ones run.
#[derive(Default)]
pub struct FakeRunner {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Command>>,
    delays: Mutex<Vec<(Matcher, Duration)>>,
}

/// How often a delayed command looks at its cancellation.
const DELAY_CANCEL_CHECK: Duration = Duration::from_millis(2);

impl std::fmt::Debug for FakeRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRunner")
            .field("rules", &lock(&self.rules).len())
            .field("calls", &lock(&self.calls).len())
            .finish()
    }
}

impl FakeRunner {
    /// A runner with no rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers commands of `program` whose arguments start with `prefix`.
    pub fn on(
        &self,
        program: &str,
        prefix: &[&str],
        handler: impl Fn(&Command) -> CommandOutput + Send + Sync + 'static,
    ) -> &Self {
        let program = program.to_string();
        let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        self.on_match(
            move |c| {
                let p: Vec<&str> = prefix.iter().map(String::as_str).collect();
                c.program() == program && c.args_start_with(&p)
            },
            handler,
        )
    }

    /// Answers commands `matches` accepts.
    pub fn on_match(
        &self,
        matches: impl Fn(&Command) -> bool + Send + Sync + 'static,
        handler: impl Fn(&Command) -> CommandOutput + Send + Sync + 'static,
    ) -> &Self {
        lock(&self.rules).push(Rule {
            matches: Box::new(matches),
            handler: Arc::new(handler),
        });
        self
    }

    /// Makes the next command `matches` accepts a slow program: it is answered by its rule
    /// only after `delay`, and a cancellation that fires meanwhile ends it at once with
    /// [`Error::CommandCancelled`], as a killed program ends. Once only.
    pub fn delay_next(
        &self,
        matches: impl Fn(&Command) -> bool + Send + Sync + 'static,
        delay: Duration,
    ) -> &Self {
        lock(&self.delays).push((Box::new(matches), delay));
        self
    }

    /// Every command run so far, in order.
    pub fn commands(&self) -> Vec<Command> {
        lock(&self.calls).clone()
    }

    /// Every command run so far as shown in logs (secrets masked).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).iter().map(|c| c.to_string()).collect()
    }

    /// What each command shown as containing `needle` got on its standard input
    /// ([`Command::stdin_secret`]), in order: `None` for one that got nothing. The values
    /// are in clear, for a test's assertions; [`FakeRunner::calls`] shows them as `***`.
    pub fn stdin_given(&self, needle: &str) -> Vec<Option<String>> {
        lock(&self.calls)
            .iter()
            .filter(|c| c.to_string().contains(needle))
            .map(|c| c.stdin().map(|s| s.expose().to_string()))
            .collect()
    }

    /// How many commands shown as containing `needle` ran.
    pub fn count(&self, needle: &str) -> usize {
        self.calls().iter().filter(|c| c.contains(needle)).count()
    }

    /// Forgets the recorded commands.
    pub fn clear_calls(&self) {
        lock(&self.calls).clear();
    }
}

impl CommandRunner for FakeRunner {
    fn run(&self, cmd: &Command) -> Result<CommandOutput> {
        lock(&self.calls).push(cmd.clone());
        let cancelled = || Error::CommandCancelled {
            program: cmd.program().to_string(),
            args: cmd.shown_args(),
        };
        let is_cancelled = || cmd.cancellation().is_some_and(|c| c.is_cancelled());
        if is_cancelled() {
            return Err(cancelled());
        }
        let delay = {
            let mut delays = lock(&self.delays);
            delays
                .iter()
                .position(|(m, _)| m(cmd))
                .map(|i| delays.remove(i).1)
        };
        if let Some(d) = delay {
            let end = Instant::now() + d;
            while Instant::now() < end {
                if is_cancelled() {
                    return Err(cancelled());
                }
                std::thread::sleep(DELAY_CANCEL_CHECK.min(end - Instant::now()));
            }
        }
        let handler = lock(&self.rules)
            .iter()
            .rev()
            .find(|r| (r.matches)(cmd))
            .map(|r| r.handler.clone());
        match handler {
            // A handler may take its time (a slow program): a cancel that fired meanwhile
            // killed the program, as the system runner's would.
            Some(h) => {
                let out = h(cmd);
                if is_cancelled() {
                    return Err(cancelled());
                }
                Ok(out)
            }
            None => Err(Error::CommandNotFound {
                program: cmd.program().to_string(),
                searched: vec![PathBuf::from("(fake runner: no rule)")],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_rules_newest_first_and_unmatched_is_an_error() {
        let r = FakeRunner::new();
        r.on("iscsiadm", &["-m", "session"], |_| {
            CommandOutput::exit(21, "iscsiadm: No active sessions.\n")
        });
        r.on("iscsiadm", &["-m", "session"], |_| {
            CommandOutput::ok("tcp: [1] 127.0.0.1:3260,1 iqn.2003-01.x:t (non-flash)\n")
        });
        let out = r
            .run(&Command::new("iscsiadm").args(["-m", "session"]))
            .unwrap();
        assert!(out.status.success());
        assert!(matches!(
            r.run(&Command::new("nvme")),
            Err(Error::CommandNotFound { .. })
        ));
        assert_eq!(r.count("iscsiadm -m session"), 1);
    }

    #[test]
    fn stdin_is_recorded_masked_and_readable_for_assertions() {
        let r = FakeRunner::new();
        r.on("cryptsetup", &[], |_| CommandOutput::ok(""));
        r.run(
            &Command::new("cryptsetup")
                .args(["luksOpen", "--key-file=-", "/dev/sdb", "crypt-sdb"])
                .stdin_secret(&crate::Secret::new("00ff")),
        )
        .unwrap();
        r.run(&Command::new("cryptsetup").args(["status", "crypt-sdb"]))
            .unwrap();
        assert_eq!(
            r.calls(),
            [
                "cryptsetup luksOpen --key-file=- /dev/sdb crypt-sdb <stdin ***>",
                "cryptsetup status crypt-sdb"
            ]
        );
        assert_eq!(
            r.stdin_given("cryptsetup"),
            [Some("00ff".to_string()), None]
        );
        assert!(!format!("{:?}", r.commands()).contains("00ff"));
    }
}
