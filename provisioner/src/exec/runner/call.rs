//! One module call: templated arguments, probes (answered from the play's prefetch while
//! valid), the plan, the actions in apply mode; engine modules (`debug`, `assert`, ...).

use super::*;

/// Ansible's `MAX_FILE_SIZE_FOR_DIFF`: larger contents are not diffed.
pub(super) const MAX_DIFF_BYTES: usize = 104_448;

/// One side of a diff as reported: binary (a NUL in its first 8 KiB, as Ansible checks) or
/// oversized contents are replaced by a one-line note, as Ansible skips those diffs.
pub(super) fn diff_side(text: &str) -> String {
    let head = &text.as_bytes()[..text.len().min(8192)];
    if head.contains(&0) {
        "[diff skipped: binary content]\n".to_string()
    } else if text.len() > MAX_DIFF_BYTES {
        format!(
            "[diff skipped: {} bytes, more than {MAX_DIFF_BYTES}]\n",
            text.len()
        )
    } else {
        text.to_string()
    }
}

/// What the actions of one module call can change, to keep the probe answers gathered before
/// it that they cannot affect: `Some(paths)` when they only write at, under or above these
/// absolute paths (file writes, and commands of a module [`modules::Module::confined_to`] its
/// paths; none for a read-only module), `None` when anything may change (commands, packages,
/// services, ...).
pub(super) fn touched_paths(
    m: &dyn modules::Module,
    args: &modules::Args,
    actions: &[Action],
) -> Option<Vec<String>> {
    // A read-only module (wait_for, uri GET) runs actions that change nothing.
    if m.read_only(args) {
        return Some(Vec::new());
    }
    let mut paths: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteFile { path, .. } => Some(path.clone()),
            Action::Exec { .. } => None,
        })
        .collect();
    if paths.len() != actions.len() {
        paths.extend(m.confined_to(args)?);
    }
    paths.iter().all(|p| p.starts_with('/')).then(|| {
        paths
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect()
    })
}

/// Whether a probe answer survives a change confined to `touched` (see [`touched_paths`]):
/// stat/read of an unrelated path that is not, and is not under, a symlink (`via_link`: what
/// it shows may change with any other path) and package state do; commands and unit state do
/// not (a unit file may have been written).
pub(super) fn still_valid(
    probe: &facts::Probe,
    touched: &[String],
    via_link: &HashSet<String>,
) -> bool {
    let related = |p: &str| {
        let p = p.trim_end_matches('/');
        touched.iter().any(|t| {
            p == t
                || p.strip_prefix(t.as_str())
                    .is_some_and(|r| r.starts_with('/'))
                || t.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
                || p.is_empty()
                || t.is_empty()
        })
    };
    match probe.path() {
        Some(path) => !related(path) && !via_link.contains(path),
        None => matches!(probe, facts::Probe::Dpkg { .. }),
    }
}

impl Runner {
    /// One module call with templated arguments.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call(
        &self,
        host: &str,
        play: usize,
        task: &Task,
        module: &str,
        raw_args: &Map<String, Value>,
        vars: &Arc<Vars>,
        become_: Option<Become>,
        check: bool,
    ) -> CallResult {
        let fail = |msg: String| CallResult {
            result: msg_map_failed(msg),
            status: TaskStatus::Failed,
            diffs: vec![],
        };
        if module == "set_fact" {
            return self.set_fact(host, raw_args, vars);
        }
        let mut args = match self
            .templar
            .render_value(&Value::Object(raw_args.clone()), vars)
        {
            Ok(Value::Object(m)) => m,
            Ok(_) => return fail("module arguments did not template to a mapping".into()),
            Err(e) => return fail(e.to_string()),
        };
        template::strip_omitted(&mut args);
        match module {
            "debug" => return self.debug(&args, vars),
            "include_vars" => {
                let role = task.role.as_ref().map(|r| PathBuf::from(&r.dir));
                let loaded = crate::resolve::include_vars::load(
                    &args,
                    role.as_deref(),
                    &self.cfg.playbook_dir,
                );
                return match loaded {
                    Ok(l) => {
                        let facts = l.vars;
                        self.with_state(host, |s| {
                            Arc::make_mut(&mut s.include_vars).extend(facts.clone())
                        });
                        CallResult {
                            result: json_map(json!({
                                "changed": false,
                                "ansible_facts": facts,
                                "ansible_included_var_files": l.files,
                            })),
                            status: TaskStatus::Ok,
                            diffs: vec![],
                        }
                    }
                    Err(e) => fail(format!("{}: {e}", task.loc)),
                };
            }
            "fail" => {
                let msg = args
                    .get("msg")
                    .and_then(Value::as_str)
                    .unwrap_or("Failed as requested from task");
                return fail(msg.to_string());
            }
            "assert" => return self.assert(&args, raw_args, vars),
            "meta" => {
                let what = args
                    .get("_raw_params")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                // The header once per task and batch, before any handler it runs.
                let batch = self.batch_of(play, host).map_or(0, |b| b.0);
                let first = self
                    .meta_shown
                    .lock()
                    .is_ok_and(|mut m| m.insert((play, task.loc.clone(), batch)));
                if first {
                    self.emit(RunEvent::MetaTask {
                        play,
                        task: self.title(play, task, host, Some(vars)),
                    });
                }
                return match what {
                    "flush_handlers" => {
                        let o = self.flush_handlers(host, play).await;
                        CallResult {
                            result: Map::new(),
                            status: if o == StepOutcome::Ok {
                                TaskStatus::Ok
                            } else {
                                TaskStatus::Failed
                            },
                            diffs: vec![],
                        }
                    }
                    "noop" => CallResult {
                        result: Map::new(),
                        status: TaskStatus::Ok,
                        diffs: vec![],
                    },
                    other => fail(format!(
                        "meta: `{other}` is not supported (flush_handlers and noop are)"
                    )),
                };
            }
            _ => {}
        }
        let Some(m) = modules::lookup(module) else {
            return fail(format!("module `{module}` is not available"));
        };
        // Control-node files become content before the module sees them.
        if let Err(e) = self
            .inline_local_files(module, task, &mut args, vars, false)
            .await
        {
            return fail(e);
        }
        let probes = match m.probes(&args) {
            Ok(p) => p,
            Err(e) => return fail(e.to_string()),
        };
        // delegate_to: the module runs over the delegated host's connection, with this host's
        // variables (as in Ansible).
        let target = match self.delegate_target(task, vars) {
            Ok(Some(t)) => t,
            Ok(None) => host.to_string(),
            Err(e) => return fail(e),
        };
        let become_key = become_.as_ref().map(|b| b.user.clone());
        let from_cache = || -> Option<Facts> {
            if probes.is_empty() {
                return None;
            }
            self.with_state(&target, |s| {
                probes
                    .iter()
                    .map(|p| {
                        s.probe_cache
                            .get(&(become_key.clone(), p.clone()))
                            .map(|r| (p.clone(), r.clone()))
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .map(|answers| Facts {
                answers,
                ..Default::default()
            })
        };
        let mut cached = from_cache();
        let again = (cached.is_none() && !probes.is_empty() && target == host)
            .then(|| {
                self.with_state(host, |s| {
                    std::mem::take(&mut s.prefetch_again).then_some(s.current_task)
                })
            })
            .flatten();
        if let Some(from) = again {
            // A read-only command dropped the play's answers: gather the rest once more.
            self.prefetch(host, play, from, true).await;
            cached = from_cache();
        }
        let facts = if probes.is_empty() {
            Facts::default()
        } else if let Some(f) = cached {
            f
        } else {
            let script = facts::probe::probe_script(&probes);
            // Probes only read: one retry after a dropped connection is safe.
            let first = self
                .exec(&target, script.clone(), None, become_.clone(), task.no_log)
                .await;
            let answer = match first {
                Err(TransportError::Disconnected { .. }) => {
                    self.exec(&target, script, None, become_.clone(), task.no_log)
                        .await
                }
                other => other,
            };
            match answer {
                Err(e) if e.is_unreachable() => {
                    return CallResult {
                        result: msg_map(e.to_string()),
                        status: TaskStatus::Unreachable,
                        diffs: vec![],
                    }
                }
                Err(e) => return fail(e.to_string()),
                Ok(o) if o.exit_status != 0 => {
                    return fail(format!(
                        "reading the host's state failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                }
                Ok(o) => match facts::probe::parse_probe_output(&probes, &o.stdout) {
                    Ok(f) => {
                        self.with_state(&target, |s| s.via_link.extend(f.via_link.clone()));
                        f
                    }
                    Err(e) => return fail(format!("cannot parse the host's state: {e}")),
                },
            }
        };
        let mode = if check { Mode::Check } else { Mode::Apply };
        let planned = match m.plan(&args, &facts, mode) {
            // Planned from the local file's checksum, and the content differs: send it.
            Err(e) if e.is_needs_content() => {
                if let Err(e) = self.inline_local_content(task, &mut args).await {
                    return fail(e);
                }
                m.plan(&args, &facts, mode)
            }
            other => other,
        };
        let planned = match planned {
            Ok(p) => p,
            Err(e) => return fail(e.to_string()),
        };
        let diffs: Vec<DiffText> = match &planned {
            Planned::Change { diffs, .. } => diffs
                .iter()
                .map(|d| DiffText {
                    label: d.label.clone(),
                    before: diff_side(&d.before),
                    after: diff_side(&d.after),
                })
                .collect(),
            Planned::NoChange { .. } => vec![],
        };
        // Read-only modules (wait_for, uri GET) also run in check mode, as in Ansible.
        let run_actions = !check || m.read_only(&args);
        let outputs = match (&planned, run_actions) {
            (Planned::Change { actions, .. }, true) => {
                // A read-only command (the stack's convention) touches nothing.
                let touched = if self.declared_read_only(task, module) {
                    Some(Vec::new())
                } else {
                    touched_paths(m, &args, actions)
                };
                match self
                    .perform(
                        &target,
                        actions,
                        touched.as_deref(),
                        become_.clone(),
                        task.no_log,
                    )
                    .await
                {
                    Ok(o) => o,
                    Err(e) if e.is_unreachable() => {
                        return CallResult {
                            result: msg_map(e.to_string()),
                            status: TaskStatus::Unreachable,
                            diffs,
                        }
                    }
                    Err(e) => return fail(e.to_string()),
                }
            }
            _ => Vec::new(),
        };
        let r: ModuleResult = if run_actions {
            m.finish(&args, &planned, &outputs)
        } else {
            m.check_result(&args, &planned)
        };
        let status = if r.failed {
            TaskStatus::Failed
        } else if r.skipped {
            TaskStatus::Skipped
        } else if r.changed {
            TaskStatus::Changed
        } else {
            TaskStatus::Ok
        };
        let mut result = r.data;
        result.insert("changed".into(), json!(r.changed));
        if r.failed {
            result.insert("failed".into(), json!(true));
        }
        if r.skipped {
            result.insert("skipped".into(), json!(true));
        }
        if let Some(msg) = r.msg {
            result.insert("msg".into(), json!(msg));
        }
        // Facts a module returns (package_facts) become host facts, under `ansible_facts` and
        // by their own names, as in Ansible.
        if let Some(Value::Object(new_facts)) = result.get("ansible_facts") {
            let new_facts = new_facts.clone();
            self.with_state(host, |s| {
                let facts = Arc::make_mut(&mut s.facts);
                let af = facts
                    .entry("ansible_facts".to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(af) = af {
                    af.extend(new_facts.clone());
                }
                facts.extend(new_facts);
            });
        }
        CallResult {
            result,
            status,
            diffs,
        }
    }

    /// A `command` or `shell` task declared read-only by a literal `changed_when: false`, in a
    /// run that trusts that declaration ([`super::RunConfig::read_only_commands`]).
    pub(super) fn declared_read_only(&self, task: &Task, module: &str) -> bool {
        self.cfg.read_only_commands
            && matches!(module, "command" | "shell")
            && matches!(task.changed_when.as_slice(), [Value::Bool(false)])
    }

    /// The inventory host a task is delegated to, if any.
    pub(super) fn delegate_target(
        &self,
        task: &Task,
        vars: &Arc<Vars>,
    ) -> Result<Option<String>, String> {
        let Some(d) = &task.delegate_to else {
            return Ok(None);
        };
        let name = self
            .templar
            .render_string(d, vars)
            .map_err(|e| format!("delegate_to: {e}"))?;
        if self.inventory.host(&name).is_none() {
            return Err(format!(
                "delegate_to: `{name}` is not a host of the inventory (local execution is not supported)"
            ));
        }
        Ok(Some(name))
    }

    /// Gather, in one round trip per become user, the probes of every task of `play` whose
    /// arguments can already be rendered on `host`. Tasks whose arguments depend on results not
    /// known yet are left out; they probe when they run. Failures here are not errors: the
    /// tasks then probe live. With `again`, once more from top-level task `from` on
    /// (`HostState::prefetch_again`).
    pub(super) async fn prefetch(&self, host: &str, play_idx: usize, from: usize, again: bool) {
        if !self.with_state(host, |s| s.prefetched.insert(play_idx)) && !again {
            return;
        }
        // Covered by an earlier pass that rendered every task of this play, and nothing was
        // dropped since: nothing to top up.
        if !again && self.with_state(host, |s| s.covered.get(&play_idx) == Some(&s.drops)) {
            return;
        }
        // This play from `from`; with nothing answered yet (the run's first prefetch, or after
        // an action dropped every answer), every later play this host is in too: one round
        // trip for the rest of the run. Each later play still tops up when it starts (asking
        // only what is not answered): a task whose arguments read what an earlier task sets
        // renders differently (or not at all) before that task ran.
        let (cold, drops) = self.with_state(host, |s| (s.probe_cache.is_empty(), s.drops));
        let later: Vec<usize> = if cold {
            (play_idx + 1..self.plays.len())
                .filter(|p| self.play_hosts[*p].iter().any(|h| h == host))
                .collect()
        } else {
            Vec::new()
        };
        let mut by_become: std::collections::BTreeMap<Option<String>, Vec<facts::Probe>> =
            Default::default();
        let mut stack: Vec<(usize, &Task)> = later
            .iter()
            .rev()
            .flat_map(|&p| self.plays[p].tasks.iter().rev().map(move |t| (p, t)))
            .chain(
                self.plays[play_idx]
                    .tasks
                    .iter()
                    .skip(from)
                    .rev()
                    .map(|t| (play_idx, t)),
            )
            .collect();
        // Later plays with a task whose arguments did not render now: they top up at start.
        let mut partial: BTreeSet<usize> = BTreeSet::new();
        while let Some((play_idx, task)) = stack.pop() {
            let play = &self.plays[play_idx];
            let (module, raw_args) = match &task.kind {
                TaskKind::Block {
                    block,
                    rescue,
                    always,
                } => {
                    stack.extend(always.iter().rev().map(|t| (play_idx, t)));
                    stack.extend(rescue.iter().rev().map(|t| (play_idx, t)));
                    stack.extend(block.iter().rev().map(|t| (play_idx, t)));
                    continue;
                }
                TaskKind::Module { module, args } => (module, args),
            };
            let Some(m) = modules::lookup(module) else {
                continue;
            };
            let mut vars = self.task_vars(host, play_idx, Some(task));
            let items: Vec<Option<Value>> = match &task.loop_ {
                None => vec![None],
                Some(l) => match self.templar.render_value(l, &vars) {
                    Ok(Value::Array(a)) if !task.loop_flatten => a.into_iter().map(Some).collect(),
                    _ => {
                        partial.insert(play_idx);
                        continue;
                    }
                },
            };
            let become_ = self
                .become_for(host, play, Some(task), &vars)
                .map(|b| b.user);
            for item in items {
                if let Some(i) = item {
                    vars::set_loop_item(Arc::make_mut(&mut vars), &task.loop_var, i);
                }
                // A task its `when` skips now asks nothing: a condition that becomes true
                // later (a fact set in between) makes the task ask for itself when it runs.
                if matches!(self.eval_conditions(&task.when, &vars), Ok(false)) {
                    continue;
                }
                let Ok(Value::Object(mut args)) = self
                    .templar
                    .render_value(&Value::Object(raw_args.clone()), &vars)
                else {
                    partial.insert(play_idx);
                    continue;
                };
                template::strip_omitted(&mut args);
                if self
                    .inline_local_files(module, task, &mut args, &vars, true)
                    .await
                    .is_err()
                {
                    partial.insert(play_idx);
                    continue;
                }
                if let Ok(probes) = m.probes(&args) {
                    let list = by_become.entry(become_.clone()).or_default();
                    for p in probes {
                        if !list.contains(&p) {
                            list.push(p);
                        }
                    }
                }
            }
        }
        let mut answered = true;
        for (user, mut probes) in by_become {
            // What the host answered stays true until an action drops it (`perform`): as for
            // facts, the run reads the host once (pyinfra's model), not once per play.
            self.with_state(host, |s| {
                probes.retain(|p| !s.probe_cache.contains_key(&(user.clone(), p.clone())))
            });
            if probes.is_empty() {
                continue;
            }
            let (script, stdin) = facts::probe::prefetch_script(&probes);
            let become_ = user.clone().map(|user| Become { user });
            let Ok(out) = self.exec(host, script, Some(stdin), become_, false).await else {
                return;
            };
            match facts::probe::parse_probe_output(&probes, &out.stdout) {
                Ok(f) if out.exit_status == 0 => self.with_state(host, |s| {
                    s.via_link.extend(f.via_link);
                    for (p, r) in f.answers {
                        s.probe_cache.insert((user.clone(), p), r);
                    }
                }),
                _ => answered = false,
            }
        }
        if answered {
            self.with_state(host, |s| {
                for p in later.iter().filter(|p| !partial.contains(p)) {
                    s.covered.insert(*p, drops);
                }
            });
        }
    }

    /// Send actions in order; stop at the first that fails.
    pub(super) async fn perform(
        &self,
        host: &str,
        actions: &[Action],
        touched: Option<&[String]>,
        become_: Option<Become>,
        no_log: bool,
    ) -> Result<Vec<ActionOutput>, TransportError> {
        // Nothing touched (a read-only command): every answer stays true.
        let reads_only = touched.is_some_and(|t| t.is_empty());
        if !actions.is_empty() && !reads_only {
            // The host changes: answers gathered before that this change may affect are stale.
            self.with_state(host, |s| {
                s.probes_dropped = true;
                s.drops += 1;
                match touched {
                    // A change through a symlink may land anywhere.
                    Some(paths) if !paths.iter().any(|t| s.via_link.contains(t)) => {
                        let via_link = &s.via_link;
                        s.probe_cache
                            .retain(|(_, p), _| still_valid(p, paths, via_link));
                    }
                    _ => s.probe_cache.clear(),
                }
            });
        }
        let mut outputs = Vec::with_capacity(actions.len());
        for a in actions {
            let (script, stdin) = match a {
                Action::Exec { script, stdin } => (script.clone(), stdin.clone()),
                Action::WriteFile {
                    path,
                    content,
                    mode,
                    owner,
                    group,
                } => (
                    crate::transport::files::atomic_write_script(
                        Path::new(path),
                        content.len(),
                        *mode,
                        owner.as_deref(),
                        group.as_deref(),
                    ),
                    Some(content.clone()),
                ),
            };
            let o = self
                .exec(host, script, stdin, become_.clone(), no_log)
                .await?;
            let failed = o.exit_status != 0;
            outputs.push(ActionOutput {
                rc: o.exit_status as i32,
                stdout: o.stdout,
                stderr: o.stderr,
            });
            if failed {
                break;
            }
        }
        Ok(outputs)
    }

    /// `set_fact`: each value templated once; a value that read host data stays unsafe, the
    /// others are templated again on read, as Ansible does.
    fn set_fact(&self, host: &str, raw_args: &Map<String, Value>, vars: &Arc<Vars>) -> CallResult {
        let shared = vars.clone();
        let mut facts = Map::new();
        let mut tainted = BTreeSet::new();
        for (k, raw) in raw_args {
            if k == "cacheable" {
                continue;
            }
            match self.templar.render_marked(raw, shared.clone()) {
                Ok(r) if template::is_omit(&r.value) => {}
                Ok(r) => {
                    if r.unsafe_ {
                        tainted.insert(k.clone());
                    }
                    facts.insert(k.clone(), r.value);
                }
                Err(e) => {
                    return CallResult {
                        result: msg_map_failed(e.to_string()),
                        status: TaskStatus::Failed,
                        diffs: vec![],
                    }
                }
            }
        }
        self.with_state(host, |s| {
            for (k, v) in &facts {
                s.set_fact(k.clone(), v.clone(), tainted.contains(k));
            }
        });
        CallResult {
            result: json_map(json!({"changed": false, "ansible_facts": facts})),
            status: TaskStatus::Ok,
            diffs: vec![],
        }
    }

    pub(super) fn debug(&self, args: &Map<String, Value>, vars: &Arc<Vars>) -> CallResult {
        let mut result = Map::new();
        if let Some(var) = args.get("var").and_then(Value::as_str) {
            let v = self
                .templar
                .render_str(&format!("{{{{ {var} }}}}"), vars)
                .unwrap_or_else(|_| json!("VARIABLE IS NOT DEFINED!"));
            result.insert(var.to_string(), v.clone());
            result.insert("msg".into(), json!(format!("{var}: {}", display_value(&v))));
        } else {
            let msg = args
                .get("msg")
                .cloned()
                .unwrap_or_else(|| json!("Hello world!"));
            result.insert("msg".into(), json!(display_value(&msg)));
        }
        result.insert("changed".into(), json!(false));
        CallResult {
            result,
            status: TaskStatus::Ok,
            diffs: vec![],
        }
    }

    pub(super) fn assert(
        &self,
        args: &Map<String, Value>,
        raw_args: &Map<String, Value>,
        vars: &Arc<Vars>,
    ) -> CallResult {
        // `that` holds expressions: evaluate them as written, not templated first.
        let that: Vec<Value> = match raw_args.get("that") {
            Some(Value::Array(a)) => a.clone(),
            Some(v) => vec![v.clone()],
            None => {
                return CallResult {
                    result: msg_map_failed("assert needs `that`".into()),
                    status: TaskStatus::Failed,
                    diffs: vec![],
                }
            }
        };
        for cond in &that {
            match self.eval_conditions(std::slice::from_ref(cond), vars) {
                Ok(true) => {}
                Ok(false) => {
                    let msg = args
                        .get("fail_msg")
                        .or_else(|| args.get("msg"))
                        .map(display_value)
                        .unwrap_or_else(|| "Assertion failed".to_string());
                    let mut r = msg_map_failed(msg);
                    r.insert("assertion".into(), cond.clone());
                    r.insert("evaluated_to".into(), json!(false));
                    return CallResult {
                        result: r,
                        status: TaskStatus::Failed,
                        diffs: vec![],
                    };
                }
                Err(e) => {
                    return CallResult {
                        result: msg_map_failed(e),
                        status: TaskStatus::Failed,
                        diffs: vec![],
                    }
                }
            }
        }
        let msg = args
            .get("success_msg")
            .map(display_value)
            .unwrap_or_else(|| "All assertions passed".into());
        CallResult {
            result: json_map(json!({"changed": false, "msg": msg})),
            status: TaskStatus::Ok,
            diffs: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_oversized_diffs_are_skipped_like_ansible() {
        // Regression: the stand-in binary's bytes went into every JSON event of its copy task.
        assert_eq!(diff_side("a\nb\n"), "a\nb\n");
        assert_eq!(
            diff_side("ELF\0\u{1}\u{2}"),
            "[diff skipped: binary content]\n"
        );
        let big = "x".repeat(MAX_DIFF_BYTES + 1);
        assert!(diff_side(&big).starts_with("[diff skipped: 104449 bytes"));
    }

    #[test]
    fn a_file_change_keeps_the_answers_it_cannot_affect() {
        use facts::Probe;
        let module = |name: &str| modules::lookup(name).unwrap();
        let stat = |p: &str| Probe::Stat {
            path: p.into(),
            follow: false,
        };
        let touched = vec!["/etc/app".to_string()];
        let none = HashSet::new();
        assert!(!still_valid(&stat("/etc/app"), &touched, &none));
        assert!(
            !still_valid(&stat("/etc/app/conf.d/x"), &touched, &none),
            "under it"
        );
        assert!(!still_valid(&stat("/etc"), &touched, &none), "its parent");
        assert!(
            still_valid(&stat("/etc/apparmor"), &touched, &none),
            "a sibling with the same prefix"
        );
        assert!(still_valid(
            &Probe::Dpkg {
                packages: vec!["tree".into()]
            },
            &touched,
            &none
        ));
        assert!(!still_valid(
            &Probe::Command {
                script: "ls".into()
            },
            &touched,
            &none
        ));

        let mut args = modules::Args::new();
        args.insert("path".into(), json!("/etc/app/"));
        let exec = Action::Exec {
            script: "mkdir -p /etc/app".into(),
            stdin: None,
        };
        assert_eq!(
            touched_paths(module("file"), &args, std::slice::from_ref(&exec)),
            Some(vec!["/etc/app".to_string()])
        );
        assert_eq!(
            touched_paths(module("command"), &args, &[exec]),
            None,
            "a command may do anything"
        );
        args.insert("path".into(), json!("relative"));
        assert_eq!(
            touched_paths(
                module("file"),
                &args,
                &[Action::Exec {
                    script: "true".into(),
                    stdin: None
                }]
            ),
            None
        );
    }
}
