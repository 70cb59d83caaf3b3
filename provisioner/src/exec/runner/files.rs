//! Control-node files: `template` rendered here, `copy`/`unarchive` sources hashed or encoded
//! once per run, off the async workers.

use super::*;

impl Runner {
    /// `template` renders `src` here; `copy` reads `src` here (unless `remote_src`). With
    /// `probes_only` (a play's prefetch), a `template` is found but not rendered: its probes
    /// depend on its destination alone, and the task renders it when it runs.
    pub(super) async fn inline_local_files(
        &self,
        module: &str,
        task: &Task,
        args: &mut Map<String, Value>,
        vars: &Arc<Vars>,
        probes_only: bool,
    ) -> Result<(), String> {
        let remote = args
            .get("remote_src")
            .and_then(crate::model::inventory::ansible_bool)
            .unwrap_or(false);
        let Some(src) = args.get("src").and_then(Value::as_str).map(str::to_string) else {
            return Ok(());
        };
        match module {
            "template" => {
                let path = self.find_local(task, "templates", &src)?;
                let flag = |k: &str| args.get(k).and_then(crate::model::inventory::ansible_bool);
                let opts = template::FileOptions {
                    search_path: self.search_dirs(task, "templates"),
                    src_arg: Some(src.clone()),
                    dest: args.get("dest").and_then(Value::as_str).map(str::to_string),
                    lstrip_blocks: flag("lstrip_blocks").unwrap_or(false),
                    no_trim_blocks: flag("trim_blocks") == Some(false),
                };
                args.remove("lstrip_blocks");
                args.remove("trim_blocks");
                if probes_only {
                    args.insert("_content".into(), json!(""));
                    return Ok(());
                }
                let text = self
                    .templar
                    .render_file_with(&path, &opts, vars)
                    .map_err(|e| e.to_string())?;
                args.insert("_content".into(), json!(text));
                Ok(())
            }
            // copy plans from the file's checksum first (an unchanged file is never encoded
            // or held per host); `inline_local_content` adds the content when it must be sent.
            "copy" if !remote => {
                let path = self.find_local(task, "files", &src)?;
                args.insert(
                    "_content_sha1".into(),
                    Value::String(self.local_sha1(&path).await?),
                );
                Ok(())
            }
            "unarchive" if !remote => {
                let path = self.find_local(task, "files", &src)?;
                args.insert(
                    "_content_b64".into(),
                    Value::String(self.local_b64(&path).await?),
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The content of a `copy` task's control-node `src`, for a plan that must write it.
    pub(super) async fn inline_local_content(
        &self,
        task: &Task,
        args: &mut Map<String, Value>,
    ) -> Result<(), String> {
        let src = args
            .get("src")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or("copy: no src to read")?;
        let path = self.find_local(task, "files", &src)?;
        args.remove("_content_sha1");
        args.insert(
            "_content_b64".into(),
            Value::String(self.local_b64(&path).await?),
        );
        Ok(())
    }

    /// A control-node file's sha1 (hex), computed once per run.
    pub(super) async fn local_sha1(&self, path: &Path) -> Result<String, String> {
        Self::cached_local(&self.local_digests, path, |bytes| {
            crate::modules::files::sha1::sha1_hex(&bytes)
        })
        .await
    }

    /// A control-node file as base64, read and encoded once per run (the same artifact is often
    /// copied to many hosts).
    pub(super) async fn local_b64(&self, path: &Path) -> Result<String, String> {
        Self::cached_local(&self.local_files, path, |bytes| {
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
        })
        .await
    }

    /// `derive` of a control-node file's bytes, kept in `cache` by path, size and mtime. A hit
    /// costs one stat; a miss reads and derives on a blocking thread, off the async workers.
    pub(super) async fn cached_local(
        cache: &Arc<Mutex<LocalFiles>>,
        path: &Path,
        derive: fn(Vec<u8>) -> String,
    ) -> Result<String, String> {
        let cant = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let meta = std::fs::metadata(path).map_err(cant)?;
        let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
        let hit = || {
            cache
                .lock()
                .ok()
                .and_then(|c| c.get(&key).map(|v| v.to_string()))
        };
        if let Some(v) = hit() {
            return Ok(v);
        }
        // One miss at a time: every host's first task asks for the same file at once (the
        // Mesos tarball, 30 MB), and each would read and hash it. The next finds it cached.
        static MISS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = MISS.lock().await;
        if let Some(v) = hit() {
            return Ok(v);
        }
        let (cache, owned) = (cache.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&owned)
                .map_err(|e| format!("cannot read {}: {e}", owned.display()))?;
            let value: Arc<str> = Arc::from(derive(bytes));
            if let Ok(mut c) = cache.lock() {
                c.insert(key, value.clone());
            }
            Ok(value.to_string())
        })
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?
    }

    pub(super) fn search_dirs(&self, task: &Task, sub: &str) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        if let Some(r) = &task.role {
            dirs.push(Path::new(&r.dir).join(sub));
            dirs.push(PathBuf::from(&r.dir));
        }
        dirs.push(self.cfg.playbook_dir.join(sub));
        dirs.push(self.cfg.playbook_dir.clone());
        dirs
    }

    pub(super) fn find_local(&self, task: &Task, sub: &str, src: &str) -> Result<PathBuf, String> {
        let p = Path::new(src);
        if p.is_absolute() {
            return if p.is_file() {
                Ok(p.to_path_buf())
            } else {
                Err(format!("could not find `{src}`"))
            };
        }
        let dirs = self.search_dirs(task, sub);
        dirs.iter()
            .map(|d| d.join(src))
            .find(|c| c.is_file())
            .ok_or_else(|| {
                format!(
                    "could not find `{src}` in {}",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}
