//! The runner churns cgroups, devices and systemd: it must never run on a real machine by
//! accident. It runs only as PID 1 (or as the kchaos service) of a VM whose kernel
//! command line carries the kchaos marker, unless forced explicitly.

use kchaos_model::protocol::VM_MARKER;

/// Where the runner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub pid1: bool,
    pub service: bool,
    pub marker: bool,
}

/// `Ok` to run, or why not.
pub fn check(situation: Situation, force: bool) -> Result<(), String> {
    if force {
        return Ok(());
    }
    if !situation.marker {
        return Err(format!(
            "the kernel command line has no `{VM_MARKER}`: this is not a kchaos VM, and the scenarios would wreck this machine (pass --force-outside-vm to run anyway)"
        ));
    }
    if !situation.pid1 && !situation.service {
        return Err(
            "not PID 1: the runner is the init of a kchaos VM (or its service, with --service)"
                .to_owned(),
        );
    }
    Ok(())
}

pub fn has_marker(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|p| p == VM_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_outside_a_kchaos_vm() {
        let host = Situation {
            pid1: false,
            service: false,
            marker: false,
        };
        assert!(check(host, false).unwrap_err().contains("not a kchaos VM"));
        assert!(check(host, true).is_ok());
        let foreign_init = Situation {
            pid1: true,
            service: false,
            marker: false,
        };
        assert!(check(foreign_init, false).is_err());
        let user_in_vm = Situation {
            pid1: false,
            service: false,
            marker: true,
        };
        assert!(check(user_in_vm, false).unwrap_err().contains("not PID 1"));
        assert!(check(
            Situation {
                pid1: true,
                service: false,
                marker: true
            },
            false
        )
        .is_ok());
        assert!(check(
            Situation {
                pid1: false,
                service: true,
                marker: true
            },
            false
        )
        .is_ok());
    }

    #[test]
    fn marker_is_a_whole_parameter() {
        assert!(has_marker("console=ttyS0 kchaos.vm=1 quiet"));
        assert!(!has_marker("console=ttyS0 kchaos.vm=10"));
        assert!(!has_marker("xkchaos.vm=1"));
    }
}
