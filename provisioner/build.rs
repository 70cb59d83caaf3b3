//! Embeds the stack's roles (`../roles`) into the binary: writes `$OUT_DIR/stack_files.rs`, a
//! sorted list of `(relative path, include_bytes!(absolute path))`. A build script rather than
//! the `include_dir` crate: cargo reruns it when any file under `roles/` changes (a directory
//! in `rerun-if-changed` is scanned recursively), which a proc macro cannot ask for on stable;
//! and it adds no dependency.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if name.starts_with('.') || name.ends_with('~') || name.ends_with(".retry") {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, out);
        } else if p.is_file() {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, p));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let roles = manifest.join("..").join("roles");
    println!("cargo:rerun-if-changed={}", roles.display());
    let mut files = Vec::new();
    let roles = roles.canonicalize().unwrap_or(roles);
    walk(&roles, &roles, &mut files);
    let mut src = String::from("/// The stack's files (`roles/`), by path relative to it, sorted.\npub static FILES: &[(&str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        src.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            abs.display().to_string()
        ));
    }
    src.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("stack_files.rs");
    std::fs::write(out, src).unwrap();
}
