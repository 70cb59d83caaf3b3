//! The lab's state on disk (JSON): what was created and the PIDs to find it again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{HostSpec, LabSpec, Role};
use super::sys;
use crate::error::{Error, Result};

pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub name: String,
    pub subnet: String,
    pub masters: usize,
    pub agents: usize,
    pub extra: usize,
    pub bridge: String,
    /// The base image (rootfs) the machines were copied from.
    pub image: PathBuf,
    pub mirror: String,
    pub security_mirror: String,
    /// The inventory file this lab wrote (absolute).
    pub inventory: PathBuf,
    /// Whether `lab up` applies the bundled stack: false for a lab made `--bare` (until a
    /// `lab up --stack`). Labs recorded before this field existed had the stack.
    #[serde(default = "stack_by_default")]
    pub stack: bool,
    /// The Mesos build tarball the stack installs (`lab up --mesos-artifact`); `None`:
    /// AVENTER's repository.
    #[serde(default)]
    pub mesos_artifact: Option<PathBuf>,
    pub hosts: Vec<HostState>,
}

fn stack_by_default() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub name: String,
    pub role: Role,
    pub ip: String,
    /// nspawn machine name (includes the lab's name).
    pub machine: String,
    /// PID of the detached systemd-nspawn process while the host runs.
    pub pid: Option<u32>,
}

impl LabState {
    pub fn spec(&self) -> Result<LabSpec> {
        Ok(LabSpec {
            name: self.name.clone(),
            subnet: self.subnet.parse()?,
            masters: self.masters,
            agents: self.agents,
            extra: self.extra,
        })
    }

    pub fn host(&self, name: &str) -> Result<&HostState> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            let names: Vec<_> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            Error::Usage(format!(
                "lab {} has no host {name:?}; its hosts are: {}",
                self.name,
                names.join(", ")
            ))
        })
    }

    pub fn host_mut(&mut self, name: &str) -> Option<&mut HostState> {
        self.hosts.iter_mut().find(|h| h.name == name)
    }

    pub fn host_specs(&self) -> Vec<HostSpec> {
        self.hosts
            .iter()
            .filter_map(|h| {
                Some(HostSpec {
                    name: h.name.clone(),
                    role: h.role,
                    ip: h.ip.parse().ok()?,
                })
            })
            .collect()
    }

    pub fn load(path: &Path) -> Result<Option<LabState>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(sys::io_err("cannot read", path, e)),
        };
        let state: LabState = serde_json::from_str(&text).map_err(|e| {
            Error::Environment(format!("lab state {} is damaged: {e}", path.display()))
        })?;
        if state.version != STATE_VERSION {
            return Err(Error::Environment(format!(
                "lab state {} has version {}, this provisioner reads {STATE_VERSION}; destroy the lab with the provisioner that made it",
                path.display(),
                state.version
            )));
        }
        Ok(Some(state))
    }

    /// Write atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Environment(format!("cannot encode lab state: {e}")))?;
        let tmp = path.with_extension("json.tmp");
        sys::write(&tmp, &(text + "\n"))?;
        std::fs::rename(&tmp, path).map_err(|e| sys::io_err("cannot rename", &tmp, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(LabState::load(&path).unwrap(), None);
        let st = LabState {
            version: STATE_VERSION,
            name: "lab".into(),
            subnet: "10.250.0.0/24".into(),
            masters: 1,
            agents: 0,
            extra: 0,
            bridge: "pl-lab".into(),
            image: "/img".into(),
            mirror: "http://m.example/debian".into(),
            security_mirror: "http://m.example/debian-security".into(),
            inventory: "/inv.yml".into(),
            stack: false,
            mesos_artifact: None,
            hosts: vec![HostState {
                name: "master1".into(),
                role: Role::Master,
                ip: "10.250.0.11".into(),
                machine: "lab-master1".into(),
                pid: Some(42),
            }],
        };
        st.save(&path).unwrap();
        assert_eq!(LabState::load(&path).unwrap(), Some(st.clone()));
        assert!(st.host("master1").is_ok());
        let err = st.host("agent9").unwrap_err().to_string();
        assert!(err.contains("master1"), "{err}");
        assert_eq!(st.spec().unwrap().hosts()[0].ip.to_string(), "10.250.0.11");
    }

    #[test]
    fn a_lab_recorded_before_the_stack_field_had_the_stack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = r#"{"version": 1, "name": "lab", "subnet": "10.250.0.0/24", "masters": 1,
            "agents": 0, "extra": 0, "bridge": "pl-lab", "image": "/img", "mirror": "m",
            "security_mirror": "s", "inventory": "/inv.yml", "hosts": []}"#;
        std::fs::write(&path, old).unwrap();
        assert!(LabState::load(&path).unwrap().unwrap().stack);
    }
}
