//! Derivation rules: container state from podman's state map, model state
//! from its containers, package state from its models. Each is a small total
//! function (STATE-MACHINES.md §1–§3).

use crate::state::{ContainerState, ModelState, PackageState};

/// podman's `Status` values, grouped the way §1 reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Dead,
    Stopped,
    Paused,
    Running,
    Initialized,
    Created,
    Other,
}

impl Status {
    fn classify(value: &str) -> Status {
        let value = trimmed(value);
        // podman's exact spelling first, any case second.
        let is = |name: &str| value == name || value.eq_ignore_ascii_case(name);
        // Dispatch on the first letter: at most two compares per value.
        match value.as_bytes().first().map(u8::to_ascii_lowercase) {
            Some(b'r') if is("running") || is("restarting") => Status::Running,
            Some(b'e') if is("exited") => Status::Stopped,
            Some(b's') if is("stopped") => Status::Stopped,
            Some(b's') if is("stopping") => Status::Running,
            Some(b'p') if is("paused") => Status::Paused,
            Some(b'd') if is("dead") => Status::Dead,
            Some(b'i') if is("initialized") => Status::Initialized,
            Some(b'c') if is("created") || is("configured") => Status::Created,
            _ => Status::Other,
        }
    }
}

/// `str::trim`, skipping the work for the usual untrimmed value.
fn trimmed(value: &str) -> &str {
    match value.as_bytes() {
        [first, .., last] if !first.is_ascii_whitespace() && !last.is_ascii_whitespace() => value,
        [only] if !only.is_ascii_whitespace() => value,
        _ => value.trim(),
    }
}

fn is_true(value: &str) -> bool {
    value == "true" || trimmed(value).eq_ignore_ascii_case("true")
}

/// Derives a container's state from the string map NodeAgent copies from
/// `podman inspect` (`Status`, `Running`, `Dead`, `OOMKilled`, `ExitCode`, ...).
///
/// Keys and values match case-insensitively; an unparsable `ExitCode` counts
/// as absent. The first matching row of STATE-MACHINES.md §1 wins. A key
/// given twice counts with its last value.
pub fn container_state<K, V>(map: impl IntoIterator<Item = (K, V)>) -> ContainerState
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut fold = ContainerStateFold::default();
    for (key, value) in map {
        fold.add(key.as_ref(), value.as_ref());
    }
    fold.state()
}

/// [`container_state`] one entry at a time, for a decoder that reads the
/// map's entries from the wire without collecting them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerStateFold {
    status: Option<Status>,
    dead: bool,
    oom_killed: bool,
    running: bool,
    /// `None`: absent or unparsable.
    exit_code: Option<i64>,
}

impl ContainerStateFold {
    /// Takes one entry of the podman map into account.
    pub fn add(&mut self, key: &str, value: &str) {
        // Dispatch on the length first: one compare per key, podman's exact
        // spelling before any case.
        let is = |name: &str| key == name || key.eq_ignore_ascii_case(name);
        match key.len() {
            6 if is("Status") => self.status = Some(Status::classify(value)),
            4 if is("Dead") => self.dead = is_true(value),
            9 if is("OOMKilled") => self.oom_killed = is_true(value),
            7 if is("Running") => self.running = is_true(value),
            8 if is("ExitCode") => self.exit_code = trimmed(value).parse::<i64>().ok(),
            _ => {}
        }
    }

    /// The state the entries seen so far give (STATE-MACHINES.md §1).
    pub fn state(&self) -> ContainerState {
        let status = self.status.unwrap_or(Status::Other);
        let stopped = status == Status::Stopped;
        let abnormal_exit = stopped && self.exit_code.is_some_and(|code| code != 0);
        // STATE-MACHINES §1, first match wins.
        if status == Status::Dead
            || self.dead
            || (self.oom_killed && stopped)
            || (stopped && abnormal_exit)
        {
            return ContainerState::Dead;
        }
        match status {
            Status::Stopped => ContainerState::Exited,
            Status::Paused => ContainerState::Paused,
            Status::Running => ContainerState::Running,
            Status::Initialized => ContainerState::Initialized,
            Status::Created => ContainerState::Created,
            Status::Dead => ContainerState::Dead,
            Status::Other if self.running => ContainerState::Running,
            Status::Other => ContainerState::Unknown,
        }
    }
}

const fn bit(state: ContainerState) -> u8 {
    1 << (state as u8)
}

/// Accumulates container states for [`model_state`] without allocating:
/// only which states are present matters, never their order or count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerSet(u8);

impl ContainerSet {
    /// Adds a container state.
    pub fn add(&mut self, state: ContainerState) {
        self.0 |= bit(state);
    }

    /// The model state these containers give (STATE-MACHINES.md §2).
    pub fn model_state(self) -> ModelState {
        let mask = self.0;
        let not_started = bit(ContainerState::Created) | bit(ContainerState::Initialized);
        if mask & (bit(ContainerState::Dead) | bit(ContainerState::Unknown)) != 0 {
            ModelState::Dead
        } else if mask & !not_started == 0 {
            ModelState::Created
        } else if mask == bit(ContainerState::Paused) {
            ModelState::Paused
        } else if mask == bit(ContainerState::Exited) {
            ModelState::Exited
        } else {
            ModelState::Running
        }
    }
}

impl FromIterator<ContainerState> for ContainerSet {
    fn from_iter<I: IntoIterator<Item = ContainerState>>(iter: I) -> Self {
        let mut set = ContainerSet::default();
        iter.into_iter().for_each(|s| set.add(s));
        set
    }
}

/// Derives a model's state from its containers (STATE-MACHINES.md §2).
///
/// Order: Dead (a container Dead or Unknown: Unknown is an information
/// failure, whose grace period the planner applies before calling this),
/// Created (no container has started: all Created/Initialized, or none),
/// Paused (all), Exited (all), Running.
pub fn model_state(containers: &[ContainerState]) -> ModelState {
    containers
        .iter()
        .copied()
        .collect::<ContainerSet>()
        .model_state()
}

/// Accumulates model states for [`package_state`] without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelSet(u8);

impl ModelSet {
    /// Adds a model state.
    pub fn add(&mut self, state: ModelState) {
        self.0 |= 1 << (state as u8);
    }

    /// The package state these models give (STATE-MACHINES.md §3).
    pub fn package_state(self) -> PackageState {
        let mask = self.0;
        let only = |state: ModelState| mask == 1 << (state as u8);
        let dead = 1u8 << (ModelState::Dead as u8);
        if mask == 0 || only(ModelState::Created) {
            PackageState::Idle
        } else if only(ModelState::Dead) {
            PackageState::Error
        } else if mask & dead != 0 {
            PackageState::Degraded
        } else if only(ModelState::Paused) {
            PackageState::Paused
        } else if only(ModelState::Exited) {
            PackageState::Exited
        } else {
            PackageState::Running
        }
    }
}

impl FromIterator<ModelState> for ModelSet {
    fn from_iter<I: IntoIterator<Item = ModelState>>(iter: I) -> Self {
        let mut set = ModelSet::default();
        iter.into_iter().for_each(|s| set.add(s));
        set
    }
}

/// Derives a package's state from its models (STATE-MACHINES.md §3).
///
/// Order: Idle (no models, or all Created), Error (all Dead), Degraded (some
/// Dead), Paused (all), Exited (all), Running.
pub fn package_state(models: &[ModelState]) -> PackageState {
    models.iter().copied().collect::<ModelSet>().package_state()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState as C;
    use ModelState as M;
    use PackageState as P;

    fn derive(pairs: &[(&str, &str)]) -> ContainerState {
        container_state(pairs.iter().copied())
    }

    #[test]
    fn container_rows_of_section_1() {
        let rows: &[(&[(&str, &str)], ContainerState)] = &[
            // Dead
            (&[("Status", "dead")], C::Dead),
            (&[("Status", "running"), ("Dead", "true")], C::Dead),
            (&[("Status", "exited"), ("OOMKilled", "true")], C::Dead),
            (&[("Status", "stopped"), ("OOMKilled", "true")], C::Dead),
            (&[("Status", "exited"), ("ExitCode", "137")], C::Dead),
            (&[("Status", "stopped"), ("ExitCode", "1")], C::Dead),
            (&[("Status", "exited"), ("ExitCode", "-1")], C::Dead),
            // OOMKilled on a running container is not Dead
            (&[("Status", "running"), ("OOMKilled", "true")], C::Running),
            // Exited
            (&[("Status", "exited"), ("ExitCode", "0")], C::Exited),
            (&[("Status", "exited")], C::Exited),
            (&[("Status", "stopped")], C::Exited),
            (&[("Status", "exited"), ("ExitCode", "oops")], C::Exited),
            (&[("Status", "exited"), ("Dead", "false")], C::Exited),
            // Paused, Running, Initialized, Created
            (&[("Status", "paused")], C::Paused),
            (&[("Status", "running")], C::Running),
            (&[("Status", "stopping")], C::Running),
            (&[("Status", "restarting")], C::Running),
            (&[("Status", "initialized")], C::Initialized),
            (&[("Status", "created")], C::Created),
            (&[("Status", "configured")], C::Created),
            // Unknown, with the Running=true fallback
            (&[], C::Unknown),
            (&[("Status", "removing")], C::Unknown),
            (&[("Status", "")], C::Unknown),
            (&[("Running", "true")], C::Running),
            (&[("Status", "weird"), ("Running", "TRUE")], C::Running),
            (&[("Running", "false")], C::Unknown),
            // case-insensitive keys and values
            (&[("status", "EXITED"), ("exitcode", " 2 ")], C::Dead),
            (&[("STATUS", "Running")], C::Running),
        ];
        for (map, expected) in rows {
            assert_eq!(derive(map), *expected, "{map:?}");
        }
    }

    #[test]
    fn model_rows_of_section_2() {
        let rows: &[(&[ContainerState], ModelState)] = &[
            (&[], M::Created),
            (&[C::Created], M::Created),
            (&[C::Created, C::Initialized], M::Created),
            (&[C::Running, C::Dead], M::Dead),
            (&[C::Paused, C::Dead], M::Dead),
            (&[C::Created, C::Dead], M::Dead),
            (&[C::Running, C::Unknown], M::Dead),
            (&[C::Paused, C::Paused], M::Paused),
            (&[C::Exited, C::Exited], M::Exited),
            (&[C::Running, C::Running], M::Running),
            (&[C::Running, C::Paused], M::Running),
            (&[C::Paused, C::Exited], M::Running),
            (&[C::Created, C::Running], M::Running),
            (&[C::Created, C::Exited], M::Running),
        ];
        for (containers, expected) in rows {
            assert_eq!(model_state(containers), *expected, "{containers:?}");
        }
    }

    #[test]
    fn package_rows_of_section_3() {
        let rows: &[(&[ModelState], PackageState)] = &[
            (&[], P::Idle),
            (&[M::Created, M::Created], P::Idle),
            (&[M::Dead], P::Error),
            (&[M::Dead, M::Dead], P::Error),
            (&[M::Dead, M::Running], P::Degraded),
            (&[M::Dead, M::Created], P::Degraded),
            (&[M::Dead, M::Exited], P::Degraded),
            (&[M::Paused, M::Paused], P::Paused),
            (&[M::Exited, M::Exited], P::Exited),
            (&[M::Running], P::Running),
            (&[M::Paused, M::Exited], P::Running),
            (&[M::Created, M::Running], P::Running),
            (&[M::Created, M::Paused], P::Running),
        ];
        for (models, expected) in rows {
            assert_eq!(package_state(models), *expected, "{models:?}");
        }
    }
}
