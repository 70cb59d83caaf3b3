//! The variables a task sees: Ansible's precedence, magic variables, become, `hostvars`.

use super::*;

/// Serves `hostvars`: each host's inventory vars, facts and registered results.
pub(super) struct HostVarsView {
    pub(super) inventory: Arc<Inventory>,
    pub(super) hosts: Arc<Mutex<HashMap<String, HostState>>>,
}

impl HostVarsSource for HostVarsView {
    fn hosts(&self) -> Vec<String> {
        self.inventory
            .host_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    fn vars(&self, host: &str) -> Option<Arc<Vars>> {
        self.inventory.host(host)?;
        let mut stack = self.inventory.var_stack(host);
        let unsafe_facts = match self.hosts.lock() {
            Ok(states) => states
                .get(host)
                .map(|s| s.set_levels(&mut stack))
                .unwrap_or_default(),
            Err(_) => BTreeSet::new(),
        };
        let mut vars = stack.resolve();
        mark_host_data(&mut vars, &stack, &unsafe_facts);
        vars.extend(self.inventory.magic_vars(host));
        Some(Arc::new(vars))
    }
}

/// Mark unsafe the variables whose winning value a host sent: every fact, and the registered
/// results and `set_fact`s in `unsafe_facts` (see `template::UNSAFE_VARS`).
fn mark_host_data(vars: &mut Vars, stack: &VarStack, unsafe_facts: &BTreeSet<String>) {
    let facts = stack
        .get(VarLevel::Facts)
        .into_iter()
        .flat_map(|f| f.keys());
    let names: Vec<String> = facts
        .filter(|k| stack.source_of(k) == Some(VarLevel::Facts))
        .chain(
            unsafe_facts
                .iter()
                .filter(|k| stack.source_of(k) == Some(VarLevel::SetFacts)),
        )
        .cloned()
        .collect();
    if !names.is_empty() {
        template::mark_unsafe(vars, names);
    }
}

/// Set a loop item under its `loop_var`. Loop items are data: used as they are, never
/// templated again.
pub(super) fn set_loop_item(vars: &mut Vars, loop_var: &str, item: Value) {
    vars.insert(loop_var.to_string(), item);
    template::mark_unsafe(vars, [loop_var]);
}

impl Runner {
    /// The variables a task sees on `host`, lowest precedence first.
    pub(super) fn task_vars(&self, host: &str, play_idx: usize, task: Option<&Task>) -> Vars {
        let play = &self.plays[play_idx];
        let mut stack: VarStack = self.inventory.var_stack(host);
        let mut defaults = Vars::new();
        for (_, d) in &play.role_defaults {
            defaults.extend(d.clone());
        }
        defaults.extend(self.cfg.stack_vars.clone());
        stack.set(VarLevel::RoleDefaults, defaults);
        let unsafe_facts = self.with_state(host, |s| s.set_levels(&mut stack));
        stack.set(VarLevel::PlayVars, play.vars.clone());
        let mut role_vars = Vars::new();
        for (_, v) in &play.role_vars {
            role_vars.extend(v.clone());
        }
        stack.set(VarLevel::RoleVars, role_vars);
        if let Some(t) = task {
            stack.set(VarLevel::TaskVars, t.vars.clone());
        }
        stack.set(VarLevel::ExtraVars, self.cfg.extra_vars.clone());
        let mut vars = stack.resolve();
        mark_host_data(&mut vars, &stack, &unsafe_facts);
        vars.extend(self.inventory.magic_vars(host));
        // As Ansible: `ansible_play_hosts_all` is every host of the play; `ansible_play_hosts`
        // leaves out hosts that failed or became unreachable (in this play or an earlier one);
        // `ansible_play_batch` (and its deprecated alias `play_hosts`) is the live part of
        // this host's `serial` batch.
        let all = self
            .play_hosts
            .get(play_idx)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let stopped = self.stopped_hosts();
        let live = |hs: &[String]| {
            hs.iter()
                .filter(|h| !stopped.contains(*h))
                .cloned()
                .collect::<Vec<_>>()
        };
        let batch = self.batch_of(play_idx, host).map_or(&[][..], |(_, b)| b);
        vars.insert("ansible_play_hosts".into(), json!(live(all)));
        vars.insert("ansible_play_batch".into(), json!(live(batch)));
        vars.insert("play_hosts".into(), json!(live(batch)));
        vars.insert("ansible_play_hosts_all".into(), json!(all));
        vars.insert("ansible_play_name".into(), json!(play.name));
        vars.insert(
            "ansible_check_mode".into(),
            json!(self.cfg.mode == Mode::Check),
        );
        vars.insert("ansible_diff_mode".into(), json!(self.cfg.diff));
        vars.insert(
            "playbook_dir".into(),
            json!(self.cfg.playbook_dir.display().to_string()),
        );
        if let Some(r) = task.and_then(|t| t.role.as_ref()) {
            vars.insert("role_name".into(), json!(r.name));
            vars.insert("role_path".into(), json!(r.dir));
        }
        vars
    }

    pub(super) fn become_for(
        &self,
        host: &str,
        play: &Play,
        task: Option<&Task>,
        vars: &Vars,
    ) -> Option<Become> {
        let inv_become = vars
            .get("ansible_become")
            .and_then(crate::model::inventory::ansible_bool);
        let on = task
            .and_then(|t| t.become_)
            .or(play.become_)
            .or(inv_become)
            .unwrap_or(self.cfg.defaults.become_);
        if !on {
            return None;
        }
        let user = task
            .and_then(|t| t.become_user.clone())
            .or_else(|| play.become_user.clone())
            .or_else(|| {
                vars.get("ansible_become_user")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| self.cfg.defaults.become_user.clone())
            .unwrap_or_else(|| "root".to_string());
        let _ = host;
        Some(Become { user })
    }
}
