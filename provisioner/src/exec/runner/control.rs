//! Control flow of one task on one host: blocks, run_once, loops, conditions, retries,
//! `register`, `notify`, and the task's result event.

use super::*;

/// The variable holding a `with_<lookup>` loop's templated terms while the lookup runs.
const WITH_TERMS: &str = "__provisioner_with_terms__";

pub(super) fn task_key(t: &Task) -> usize {
    // Tasks are unique by source location within a play.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&t.loc, &mut h);
    std::hash::Hasher::finish(&h) as usize
}

impl Runner {
    /// Run a list of tasks in order; stops at the first unhandled failure.
    pub(super) fn run_tasks<'a>(
        &'a self,
        host: &'a str,
        play: usize,
        tasks: &'a [Task],
        handler: bool,
    ) -> BoxFuture<'a, StepOutcome> {
        Box::pin(async move {
            for t in tasks {
                let o = self.run_task(host, play, t, handler).await;
                if o != StepOutcome::Ok {
                    return o;
                }
            }
            StepOutcome::Ok
        })
    }

    /// One task (or block) on one host.
    pub(super) fn run_task<'a>(
        &'a self,
        host: &'a str,
        play: usize,
        task: &'a Task,
        handler: bool,
    ) -> BoxFuture<'a, StepOutcome> {
        Box::pin(async move {
            if let TaskKind::Block {
                block,
                rescue,
                always,
            } = &task.kind
            {
                // The block's `when` was passed down to each of its tasks.
                let mut outcome = self.run_tasks(host, play, block, handler).await;
                if outcome == StepOutcome::Failed && !rescue.is_empty() {
                    outcome = self.run_tasks(host, play, rescue, handler).await;
                }
                if outcome == StepOutcome::Unreachable {
                    return outcome;
                }
                let after = self.run_tasks(host, play, always, handler).await;
                return if outcome != StepOutcome::Ok {
                    outcome
                } else {
                    after
                };
            }
            if task.run_once {
                // As Ansible: the task runs once per batch, on the batch's first host that is
                // still running; every host of the batch gets its registered result.
                let stopped = self.stopped_hosts();
                let (batch, runner_host) = self
                    .batch_of(play, host)
                    .and_then(|(i, b)| {
                        b.iter()
                            .find(|h| !stopped.contains(*h))
                            .map(|h| (i, h.clone()))
                    })
                    .unwrap_or_else(|| (0, host.to_string()));
                let cell = {
                    let mut map = match self.run_once.lock() {
                        Ok(m) => m,
                        Err(p) => p.into_inner(),
                    };
                    map.entry((play, task_key(task), batch))
                        .or_default()
                        .clone()
                };
                let designated = runner_host.as_str();
                let (outcome, registered) = cell
                    .get_or_init(|| async {
                        let o = self.run_module_task(designated, play, task, handler).await;
                        let reg = task
                            .register
                            .as_ref()
                            .and_then(|r| {
                                self.with_state(designated, |s| s.set_facts.get(r).cloned())
                            })
                            .map(|v| {
                                let mut m = Vars::new();
                                if let Some(r) = &task.register {
                                    m.insert(r.clone(), v);
                                }
                                m
                            })
                            .unwrap_or_default();
                        (o, reg)
                    })
                    .await
                    .clone();
                self.with_state(host, |s| {
                    for (name, value) in registered {
                        s.set_fact(name, value, true);
                    }
                });
                return outcome;
            }
            self.run_module_task(host, play, task, handler).await
        })
    }

    pub(super) async fn run_module_task(
        &self,
        host: &str,
        play_idx: usize,
        task: &Task,
        handler: bool,
    ) -> StepOutcome {
        let TaskKind::Module { module, args } = &task.kind else {
            return StepOutcome::Ok;
        };
        // Tasks left out by --tags/--skip-tags are not shown, as in Ansible. Handlers always run
        // when notified.
        if !handler && !tags_selected(&task.tags, &self.cfg.tags, &self.cfg.skip_tags) {
            return StepOutcome::Ok;
        }
        let play = &self.plays[play_idx];
        let at = At {
            host,
            play: play_idx,
            task,
            handler,
            started: std::time::Instant::now(),
        };
        let mut vars = self.task_vars(host, play_idx, Some(task));
        self.emit(RunEvent::TaskStarted {
            host: host.to_string(),
            play: play_idx,
            task: self.title(play_idx, task, host, Some(&vars)),
            handler,
        });
        // Loop items (or one pass without a loop).
        let items: Option<Vec<Value>> = match &task.loop_ {
            None => None,
            Some(l) => match self.loop_items(task, l, &vars) {
                Ok(Value::Array(a)) => Some(if task.loop_flatten {
                    a.into_iter()
                        .flat_map(|v| match v {
                            Value::Array(inner) => inner,
                            other => vec![other],
                        })
                        .collect()
                } else {
                    a
                }),
                Ok(other) => {
                    let m = msg_map(format!("Invalid data passed to 'loop', it requires a list, got this instead: {other}"));
                    self.report(&at, TaskStatus::Failed, None, &m, vec![]);
                    return StepOutcome::Failed;
                }
                Err(e) => {
                    // `when` is checked per item; an undefined loop under a false `when` is skipped.
                    if matches!(self.eval_conditions(&task.when, &vars), Ok(false)) {
                        self.report(&at, TaskStatus::Skipped, None, &Map::new(), vec![]);
                        return StepOutcome::Ok;
                    }
                    self.report(
                        &at,
                        TaskStatus::Failed,
                        None,
                        &msg_map(e.to_string()),
                        vec![],
                    );
                    return StepOutcome::Failed;
                }
            },
        };
        let become_ = self.become_for(host, play, Some(task), &vars);
        let check = task.check_mode.unwrap_or(self.cfg.mode == Mode::Check);

        let mut results: Vec<Value> = Vec::new();
        let mut any_changed = false;
        let mut any_failed = false;
        let mut all_skipped = true;
        let mut last: Option<CallResult> = None;
        let passes: Vec<Option<(usize, Value)>> = match &items {
            None => vec![None],
            Some(list) => list.iter().cloned().enumerate().map(Some).collect(),
        };
        for pass in passes {
            let item_at = At {
                started: std::time::Instant::now(),
                ..at
            };
            if let Some((i, item)) = &pass {
                let vars = Arc::make_mut(&mut vars);
                vars::set_loop_item(vars, &task.loop_var, item.clone());
                vars.insert("ansible_loop_var".into(), json!(task.loop_var));
                if let Some(iv) = &task.index_var {
                    vars.insert(iv.clone(), json!(i));
                }
            }
            let label = pass.as_ref().map(|(_, item)| {
                let l = task
                    .loop_label
                    .as_ref()
                    .and_then(|l| self.templar.render_value(l, &vars).ok())
                    .unwrap_or_else(|| item.clone());
                match l {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            });
            let call = match self.eval_conditions(&task.when, &vars) {
                Ok(false) => CallResult {
                    result: json_map(
                        json!({"changed": false, "skipped": true, "skip_reason": "Conditional result was False"}),
                    ),
                    status: TaskStatus::Skipped,
                    diffs: vec![],
                },
                Err(e) => CallResult {
                    result: msg_map(format!("The conditional check failed: {e}")),
                    status: TaskStatus::Failed,
                    diffs: vec![],
                },
                Ok(true) => {
                    let c = self
                        .call_with_retries(
                            host,
                            play_idx,
                            task,
                            module,
                            args,
                            &vars,
                            become_.clone(),
                            check,
                        )
                        .await;
                    if c.status == TaskStatus::Unreachable {
                        self.report(&item_at, TaskStatus::Unreachable, label, &c.result, vec![]);
                        return StepOutcome::Unreachable;
                    }
                    c
                }
            };
            let mut result = call.result.clone();
            if call.status == TaskStatus::Changed {
                any_changed = true;
            }
            if call.status == TaskStatus::Failed {
                any_failed = true;
            }
            if call.status != TaskStatus::Skipped {
                all_skipped = false;
            }
            if let Some((_, item)) = &pass {
                result.insert(task.loop_var.clone(), item.clone());
                result.insert("ansible_loop_var".into(), json!(task.loop_var));
                self.report(&item_at, call.status, label, &result, call.diffs.clone());
            }
            results.push(Value::Object(result));
            last = Some(call);
        }

        // The registered value and the task's overall status.
        let (registered, status, diffs) = match (items.is_some(), last) {
            (false, Some(c)) => (Value::Object(c.result), c.status, c.diffs),
            (_, _) => {
                let status = if any_failed {
                    TaskStatus::Failed
                } else if all_skipped && !results.is_empty() {
                    TaskStatus::Skipped
                } else if any_changed {
                    TaskStatus::Changed
                } else if results.is_empty() {
                    TaskStatus::Skipped
                } else {
                    TaskStatus::Ok
                };
                let mut m = Map::new();
                m.insert("changed".into(), json!(any_changed));
                m.insert(
                    "msg".into(),
                    json!(if any_failed {
                        "One or more items failed"
                    } else {
                        "All items completed"
                    }),
                );
                if any_failed {
                    m.insert("failed".into(), json!(true));
                }
                if results.is_empty() {
                    m.insert("skipped".into(), json!(true));
                    m.insert("skipped_reason".into(), json!("No items in the list"));
                }
                m.insert("results".into(), Value::Array(results));
                (Value::Object(m), status, vec![])
            }
        };
        if let Some(r) = &task.register {
            let reg = registered.clone();
            self.with_state(host, |s| s.set_fact(r.clone(), reg, true));
        }
        let ignored = status == TaskStatus::Failed && self.ignore_errors(task, &vars);
        let final_status = if ignored { TaskStatus::Ignored } else { status };
        let changed_host = !check && matches!(status, TaskStatus::Changed | TaskStatus::Failed);
        self.with_state(host, |s| {
            if changed_host {
                // The host may have changed: a later play gathers its facts again.
                s.facts_current = false;
            }
            // A read-only command dropped the answers: gather the rest again in one round
            // trip. After a change, the next tasks probe live, each after the change before.
            if std::mem::take(&mut s.probes_dropped) {
                s.prefetch_again = matches!(status, TaskStatus::Ok | TaskStatus::Skipped);
            }
        });
        let registered_map = match registered {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.report(
            &at,
            final_status,
            None,
            &registered_map,
            if items.is_some() { vec![] } else { diffs },
        );
        if status == TaskStatus::Changed && !task.notify.is_empty() {
            self.with_state(host, |s| {
                let pending = s.notified.entry(play_idx).or_default();
                for n in &task.notify {
                    if !pending.contains(n) {
                        pending.push(n.clone());
                    }
                }
            });
        }
        match final_status {
            TaskStatus::Failed => StepOutcome::Failed,
            _ => StepOutcome::Ok,
        }
    }

    /// `changed_when`, then `failed_when`, as Ansible applies them: each sees the task's result
    /// under its `register` name as the previous one left it. Returns the variables `until`
    /// evaluates with.
    /// A task's loop items: `loop`/`with_items` templated, or for `with_<lookup>` the lookup
    /// over the templated terms (Ansible's `listify_lookup_plugin_terms`: a string is one
    /// term), as `loop: "{{ query('<lookup>', terms) }}"` gives them. `first_found` searches
    /// the subdirectory Ansible picks from the module (`vars/` for `include_vars`, ...).
    pub(super) fn loop_items(
        &self,
        task: &Task,
        l: &Value,
        vars: &Arc<Vars>,
    ) -> Result<Value, template::TemplateError> {
        let terms = self.templar.render_value(l, vars)?;
        let Some(lookup) = &task.loop_with else {
            return Ok(terms);
        };
        let terms = match terms {
            Value::Array(a) => Value::Array(a),
            other => Value::Array(vec![other]),
        };
        let mut vars: Vars = (**vars).clone();
        vars.insert(WITH_TERMS.into(), terms);
        template::mark_unsafe(&mut vars, [WITH_TERMS]);
        let module = task.module().unwrap_or_default();
        let subdir = ["template", "var", "file"]
            .into_iter()
            .find(|s| module.contains(s))
            .unwrap_or("file");
        vars.insert(
            template::LOOKUP_SUBDIR.into(),
            Value::String(format!("{subdir}s")),
        );
        let expr = format!("{{{{ query('{lookup}', {WITH_TERMS}) }}}}");
        self.templar.render_str(&expr, &Arc::new(vars))
    }

    pub(super) fn result_conditions(
        &self,
        task: &Task,
        call: &mut CallResult,
        vars: &Arc<Vars>,
    ) -> Arc<Vars> {
        // The conditions read the registered result; literal booleans (`changed_when: false`)
        // read nothing, and then the variables are not copied to hold it.
        let conditions = [&task.changed_when, &task.failed_when, &task.until];
        let reads = conditions.iter().any(|c| c.iter().any(|x| !x.is_boolean()));
        let with_result = |call: &CallResult| {
            let mut v = vars.clone();
            if let (Some(r), true) = (&task.register, reads) {
                let m = Arc::make_mut(&mut v);
                m.insert(r.clone(), Value::Object(call.result.clone()));
                template::mark_unsafe(m, [r.clone()]);
            }
            v
        };
        let mut v = with_result(call);
        if call.status == TaskStatus::Skipped {
            return v;
        }
        for (keyword, conds) in [
            ("changed_when", &task.changed_when),
            ("failed_when", &task.failed_when),
        ] {
            if conds.is_empty() {
                continue;
            }
            match self.eval_conditions(conds, &v) {
                Ok(yes) if keyword == "changed_when" => {
                    call.result.insert("changed".into(), json!(yes));
                    if call.status != TaskStatus::Failed {
                        call.status = Self::ok_or_changed(yes);
                    }
                }
                Ok(failed) => {
                    call.result
                        .insert("failed_when_result".into(), json!(failed));
                    call.result.insert("failed".into(), json!(failed));
                    if failed {
                        call.status = TaskStatus::Failed;
                    } else if call.status == TaskStatus::Failed {
                        call.status =
                            Self::ok_or_changed(call.result.get("changed") == Some(&json!(true)));
                    }
                }
                Err(e) => {
                    call.status = TaskStatus::Failed;
                    call.result
                        .insert("msg".into(), json!(format!("{keyword}: {e}")));
                }
            }
            v = with_result(call);
        }
        v
    }

    pub(super) fn ok_or_changed(changed: bool) -> TaskStatus {
        if changed {
            TaskStatus::Changed
        } else {
            TaskStatus::Ok
        }
    }

    pub(super) fn eval_conditions(
        &self,
        conds: &[Value],
        vars: &Arc<Vars>,
    ) -> Result<bool, String> {
        if conds.is_empty() {
            return Ok(true);
        }
        let mut exprs = Vec::with_capacity(conds.len());
        for c in conds {
            match c {
                Value::Bool(b) => {
                    if !b {
                        return Ok(false);
                    }
                }
                Value::String(s) => exprs.push(s.clone()),
                other => exprs.push(other.to_string()),
            }
        }
        self.templar
            .eval_when(&exprs, vars)
            .map_err(|e| e.to_string())
    }

    pub(super) fn ignore_errors(&self, task: &Task, vars: &Arc<Vars>) -> bool {
        match &task.ignore_errors {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => self
                .templar
                .render_value(v, vars)
                .ok()
                .and_then(|r| crate::model::inventory::ansible_bool(&r))
                .unwrap_or(false),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn call_with_retries(
        &self,
        host: &str,
        play: usize,
        task: &Task,
        module: &str,
        args: &Map<String, Value>,
        vars: &Arc<Vars>,
        become_: Option<Become>,
        check: bool,
    ) -> CallResult {
        let retries = task
            .retries
            .as_ref()
            .and_then(|r| self.templar.render_value(r, vars).ok())
            .and_then(|r| {
                r.as_u64()
                    .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(3);
        let delay = task
            .delay
            .as_ref()
            .and_then(|r| self.templar.render_value(r, vars).ok())
            .and_then(|r| {
                r.as_u64()
                    .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(5);
        let attempts = if task.until.is_empty() {
            1
        } else {
            retries.max(1)
        };
        let mut n = 0;
        loop {
            n += 1;
            let mut call = self
                .call(host, play, task, module, args, vars, become_.clone(), check)
                .await;
            if call.status == TaskStatus::Unreachable {
                return call;
            }
            let v = self.result_conditions(task, &mut call, vars);
            if task.until.is_empty() {
                return call;
            }
            let done = matches!(self.eval_conditions(&task.until, &v), Ok(true));
            call.result.insert("attempts".into(), json!(n));
            if done || n >= attempts {
                if !done {
                    call.status = TaskStatus::Failed;
                    call.result.insert("failed".into(), json!(true));
                    call.result.insert("msg".into(), json!("Retries exceeded"));
                }
                return call;
            }
            tokio::time::sleep(Duration::from_secs(delay)).await;
        }
    }

    pub(super) fn report(
        &self,
        at: &At<'_>,
        status: TaskStatus,
        item: Option<String>,
        result: &Map<String, Value>,
        diffs: Vec<DiffText>,
    ) {
        let At {
            host,
            play,
            task,
            handler,
            started,
        } = *at;
        // A meta task that did its work has no host result (its header came first).
        if status == TaskStatus::Ok
            && matches!(&task.kind, TaskKind::Module { module, .. } if module == "meta")
        {
            return;
        }
        let msg = if task.no_log {
            (status != TaskStatus::Ok && status != TaskStatus::Skipped)
                .then(|| "the output has been hidden due to the fact that 'no_log: true' was specified for this result".to_string())
        } else {
            result.get("msg").map(|m| match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let diffs = if task.no_log { Vec::new() } else { diffs };
        let changed = status == TaskStatus::Changed || result.get("changed") == Some(&json!(true));
        let status = if status == TaskStatus::Failed && self.rescuable.contains(&task.loc) {
            TaskStatus::Rescued
        } else {
            status
        };
        self.emit(RunEvent::TaskFinished(TaskReport {
            host: host.to_string(),
            play,
            task: self.title(play, task, host, None),
            loc: task.loc.to_string(),
            status,
            changed,
            item,
            output: msg.is_some()
                && !task.no_log
                && matches!(&task.kind, TaskKind::Module { module, .. } if module == "debug"),
            msg,
            diffs,
            handler,
            duration_ms: started.elapsed().as_millis() as u64,
        }));
    }
}
