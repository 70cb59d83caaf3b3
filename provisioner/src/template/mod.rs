//! Templating with minijinja in strict-undefined mode, with the Ansible filters and tests that
//! roles use, and `when:` expressions.
