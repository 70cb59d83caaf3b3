//! File modules: file, copy, template, lineinfile, blockinfile, ini_file, stat, get_url, unarchive.

use super::Module;

/// Every module of this family.
pub fn modules() -> Vec<&'static dyn Module> {
    Vec::new()
}
