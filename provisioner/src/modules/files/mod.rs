//! File modules: file, copy, template, lineinfile, blockinfile, ini_file, stat, get_url, unarchive.
//!
//! Shared pieces: `args` (Ansible's argument checking and type coercion), `common` (modes,
//! owners, the write-a-file plan), `sha1` (Ansible's default checksum).

use super::Module;

pub mod args;
pub mod blockinfile;
pub mod common;
pub mod copy;
pub mod edit;
pub mod file;
pub mod get_url;
pub mod ini_file;
pub mod lineinfile;
pub mod sha1;
pub mod stat;
pub mod unarchive;

/// Every module of this family.
pub fn modules() -> Vec<&'static dyn Module> {
    vec![
        &file::File,
        &copy::Copy,
        &copy::Template,
        &stat::Stat,
        &lineinfile::LineInFile,
        &blockinfile::BlockInFile,
        &ini_file::IniFile,
        &get_url::GetUrl,
        &unarchive::Unarchive,
    ]
}
