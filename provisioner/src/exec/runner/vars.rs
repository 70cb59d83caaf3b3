//! The variables a task sees: Ansible's precedence, magic variables, become, `hostvars`.

use super::*;
use crate::model::vars::{resolve_levels, winner_of};

/// Serves `hostvars`: each host's inventory vars, facts and registered results.
pub(super) struct HostVarsView {
    pub(super) inventory: Arc<Inventory>,
    pub(super) hosts: Arc<Mutex<HashMap<String, HostState>>>,
    pub(super) stacks: Arc<Mutex<HashMap<String, Arc<VarStack>>>>,
}

/// A host's inventory levels, built once per run and shared.
fn inventory_stack(
    inventory: &Inventory,
    stacks: &Mutex<HashMap<String, Arc<VarStack>>>,
    host: &str,
) -> Arc<VarStack> {
    if let Some(s) = stacks.lock().ok().and_then(|m| m.get(host).cloned()) {
        return s;
    }
    let s = Arc::new(inventory.var_stack(host));
    if let Ok(mut m) = stacks.lock() {
        m.insert(host.to_string(), s.clone());
    }
    s
}

/// A host's state levels, or none for a host that has not run anything yet.
fn host_levels(hosts: &Mutex<HashMap<String, HostState>>, host: &str) -> Option<HostLevels> {
    hosts.lock().ok()?.get(host).map(HostState::levels)
}

/// Resolve `levels` (lowest first) and mark unsafe the variables whose winning value a host
/// sent: every fact, and the registered results and `set_fact`s in `unsafe_facts` (see
/// `template::UNSAFE_VARS`).
fn resolve_marked(levels: &[(VarLevel, &Vars)], unsafe_facts: &BTreeSet<String>) -> Vars {
    let refs: Vec<&Vars> = levels.iter().map(|(_, v)| *v).collect();
    let mut vars = resolve_levels(&refs);
    let level_of = |i: usize| levels[i].0;
    let wins_at = |k: &str, at: VarLevel| winner_of(&refs, k).map(level_of) == Some(at);
    let facts = levels
        .iter()
        .filter(|(l, _)| *l == VarLevel::Facts)
        .flat_map(|(_, v)| v.keys());
    let names: Vec<String> = facts
        .filter(|k| wins_at(k, VarLevel::Facts))
        .chain(
            unsafe_facts
                .iter()
                .filter(|k| wins_at(k, VarLevel::SetFacts)),
        )
        .cloned()
        .collect();
    if !names.is_empty() {
        template::mark_unsafe(&mut vars, names);
    }
    vars
}

/// `inventory` levels, then the host's own, in precedence order around `between`: the play's
/// levels that sit between facts (11) and `include_vars` (18), and `below` (role defaults) and
/// `above` (extra vars).
fn host_var_levels<'a>(
    below: Option<&'a Vars>,
    inventory: &'a VarStack,
    own: Option<&'a HostLevels>,
    between: &[(VarLevel, &'a Vars)],
    above: Option<&'a Vars>,
) -> Vec<(VarLevel, &'a Vars)> {
    let mut levels: Vec<(VarLevel, &Vars)> = Vec::with_capacity(16);
    if let Some(d) = below {
        levels.push((VarLevel::RoleDefaults, d));
    }
    levels.extend(inventory.levels());
    if let Some(o) = own {
        levels.push((VarLevel::Facts, &*o.facts));
    }
    levels.extend(between.iter().copied());
    if let Some(o) = own {
        levels.push((VarLevel::IncludeVars, &*o.include_vars));
        levels.push((VarLevel::SetFacts, &*o.set_facts));
    }
    if let Some(e) = above {
        levels.push((VarLevel::ExtraVars, e));
    }
    debug_assert!(levels.windows(2).all(|w| w[0].0 <= w[1].0));
    levels
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
        let inventory = inventory_stack(&self.inventory, &self.stacks, host);
        let own = host_levels(&self.hosts, host);
        let levels = host_var_levels(None, &inventory, own.as_ref(), &[], None);
        let empty = BTreeSet::new();
        let mut vars = resolve_marked(&levels, own.as_ref().map_or(&empty, |o| &o.unsafe_facts));
        vars.extend(self.inventory.magic_vars(host));
        Some(Arc::new(vars))
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
    ///
    /// Shared: every task of a play and role without vars of its own sees the same map until
    /// the host's own levels change (a fact, `include_vars`, `set_fact` or registered result)
    /// or a host stops, so it is resolved once for all of them; a caller that changes it (a
    /// loop item) clones it first (`Arc::make_mut`).
    pub(super) fn task_vars(&self, host: &str, play_idx: usize, task: Option<&Task>) -> Arc<Vars> {
        let own = host_levels(&self.hosts, host).unwrap_or_else(|| HostState::default().levels());
        let stopped = self.stopped_hosts();
        let key = VarsKey {
            host: host.to_string(),
            play: play_idx,
            task_vars: task
                .filter(|t| !t.vars.is_empty())
                .map_or(0, |t| &t.vars as *const Vars as usize),
            role: task
                .and_then(|t| t.role.as_ref())
                .map(|r| (r.name.clone(), r.dir.clone())),
        };
        let cached = self.vars_cache.lock().ok().and_then(|c| {
            c.get(&key)
                .filter(|e| e.own.same_as(&own) && e.stopped == stopped)
                .map(|e| e.vars.clone())
        });
        if let Some(v) = cached {
            return v;
        }
        let vars = Arc::new(self.resolve_task_vars(host, play_idx, task, &own, &stopped));
        if let Ok(mut c) = self.vars_cache.lock() {
            c.insert(
                key,
                CachedVars {
                    own,
                    stopped,
                    vars: vars.clone(),
                },
            );
        }
        vars
    }

    fn resolve_task_vars(
        &self,
        host: &str,
        play_idx: usize,
        task: Option<&Task>,
        own: &HostLevels,
        stopped: &BTreeSet<String>,
    ) -> Vars {
        let play = &self.plays[play_idx];
        let statics = &self.play_static[play_idx];
        let inventory = inventory_stack(&self.inventory, &self.inventory_stacks, host);
        let mut between = vec![
            (VarLevel::PlayVars, &play.vars),
            (VarLevel::RoleVars, &statics.role_vars),
        ];
        if let Some(t) = task {
            between.push((VarLevel::TaskVars, &t.vars));
        }
        let levels = host_var_levels(
            Some(&statics.defaults),
            &inventory,
            Some(own),
            &between,
            Some(&self.cfg.extra_vars),
        );
        let mut vars = resolve_marked(&levels, &own.unsafe_facts);
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
        vars: &Arc<Vars>,
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
