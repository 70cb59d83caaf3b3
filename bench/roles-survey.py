#!/usr/bin/env python3
"""Measure how much of public Ansible roles `provisioner validate` accepts (docs/ansible-coverage.md).

Usage: bench/roles-survey.py PROVISIONER_BINARY ROLES_DIR [ROLE...]

ROLES_DIR holds one role per directory (the survey keeps them outside this repository; nothing
here downloads anything). For every task file of a role (tasks/*.yml), the role is validated
with that file as its entry point (a copy of the role in a scratch dir whose tasks/main.yml
imports it), so a file is measured even when the include that reaches it is not accepted.
A task validates when no problem `validate` reports lies inside it. Task files named after
another OS family (RedHat, Suse, FreeBSD, ...) or init system (upstart) are left out of the
share and counted apart: they never run on the Debian hosts this tool targets, although
`validate` still checks them (it cannot know the OS before facts are gathered).

Prints a Markdown table (role, tasks, validating, share, top reasons) and the reasons over all
roles. Needs python3-yaml.
"""

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

OTHER_OS = re.compile(r"(RedHat|CentOS|Fedora|Suse|FreeBSD|Amazon|Archlinux|Alpine|Darwin|upstart)", re.I)
TASK_KEYS_WITH_CHILDREN = ("block", "rescue", "always")


def leaf_tasks(path):
    """(start line, end line) of every task of a task file (blocks' children, not the block)."""
    with open(path, encoding="utf-8") as f:
        try:
            root = yaml.compose(f)
        except yaml.YAMLError:
            return None
    out = []

    def walk(seq):
        if not isinstance(seq, yaml.SequenceNode):
            return
        for item in seq.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            children = [v for k, v in item.value if k.value in TASK_KEYS_WITH_CHILDREN]
            if children:
                for c in children:
                    walk(c)
            else:
                # The end mark of a block mapping sits at the start of the next item's line.
                end = item.end_mark.line + (0 if item.end_mark.column == 0 else 1)
                out.append((item.start_mark.line + 1, end))

    walk(root)
    return out


def reason(msg):
    m = re.match(r"`([^`]+)` is not a supported module or task keyword", msg)
    if m:
        return "unsupported module/keyword `%s`" % short(m.group(1))
    m = re.match(r"`([^`]+)` is not supported", msg)
    if m:
        return "unsupported module/keyword `%s`" % short(m.group(1))
    m = re.match(r"`([^`]+)` is undefined", msg)
    if m:
        return "undefined variable `%s`" % m.group(1)
    m = re.match(r"`([^`]+)` with a templated file name", msg)
    if m:
        return "templated file name in `%s`" % short(m.group(1))
    m = re.match(r"`([^`]+)` has no parameter `([^`]+)`", msg)
    if m:
        return "parameter `%s: %s`" % (short(m.group(1)), m.group(2))
    m = re.match(r"a task has one module; found `([^`]+)` and `([^`]+)`", msg)
    if m:
        return "unsupported module/keyword `%s`" % short(m.group(2))
    m = re.match(r"a templated `([^`]+)`", msg)
    if m:
        return "templated `%s`" % m.group(1)
    m = re.search(r"(filter|test|lookup plugin) `([^`]+)`", msg)
    if m:
        return "%s `%s`" % (m.group(1), m.group(2))
    return re.sub(r"`[^`]*`", "`…`", msg)[:70]


def short(name):
    for p in ("ansible.builtin.", "ansible.legacy."):
        if name.startswith(p):
            return name[len(p):]
    return name


PROBLEM = re.compile(r"^([^:\s]+):(\d+):(\d+): (.*)$")


def validate(binary, scratch, role_dir, role, entry):
    """Problems (file, line, message) of `role` validated with `entry` as its tasks/main."""
    roles = os.path.join(scratch, "roles")
    shutil.rmtree(roles, ignore_errors=True)
    os.makedirs(roles)
    copy = os.path.join(roles, role)
    shutil.copytree(role_dir, copy, symlinks=True)
    tasks = os.path.join(copy, "tasks")
    if entry not in ("main.yml", "main.yaml"):
        for m in ("main.yml", "main.yaml"):
            if os.path.exists(os.path.join(tasks, m)):
                os.remove(os.path.join(tasks, m))
        with open(os.path.join(tasks, "main.yml"), "w", encoding="utf-8") as f:
            f.write("- import_tasks: %s\n" % entry)
    with open(os.path.join(scratch, "site.yml"), "w", encoding="utf-8") as f:
        f.write("- hosts: all\n  become: true\n  roles:\n    - %s\n" % role)
    with open(os.path.join(scratch, "hosts.yml"), "w", encoding="utf-8") as f:
        f.write("all:\n  hosts:\n    node1:\n      ansible_host: 192.0.2.10\n")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(scratch, "none.cfg"))
    open(env["ANSIBLE_CONFIG"], "w").close()
    out = subprocess.run(
        [binary, "validate", "-i", "hosts.yml", "--roles-path", roles, "site.yml"],
        cwd=scratch, env=env, capture_output=True, text=True, check=False,
    )
    problems = []
    for line in (out.stdout + out.stderr).splitlines():
        m = PROBLEM.match(line.strip())
        if m:
            rel = os.path.relpath(os.path.join(scratch, m.group(1)), copy)
            problems.append((rel, int(m.group(2)), m.group(4)))
    return problems


def survey(binary, roles_dir, role):
    role_dir = os.path.join(roles_dir, role)
    tasks_dir = os.path.join(role_dir, "tasks")
    files = sorted(f for f in os.listdir(tasks_dir) if f.endswith((".yml", ".yaml")))
    total = ok = other_os = 0
    reasons = collections.Counter()
    elsewhere = collections.Counter()
    with tempfile.TemporaryDirectory() as scratch:
        for f in files:
            tasks = leaf_tasks(os.path.join(tasks_dir, f))
            if tasks is None:
                continue
            if OTHER_OS.search(f):
                other_os += len(tasks)
                continue
            problems = validate(binary, scratch, role_dir, role, f)
            here = [(line, msg) for (rel, line, msg) in problems if rel == os.path.join("tasks", f)]
            for rel, line, msg in problems:
                if not rel.startswith("tasks/"):
                    elsewhere[(rel, reason(msg))] += 1
            for start, end in tasks:
                msgs = [msg for (line, msg) in here if start <= line <= end]
                total += 1
                # "calls no module" follows from an unsupported keyword/module on the same task.
                real = [m for m in msgs if m != "this task calls no module"] or msgs
                if real:
                    for r in sorted({reason(m) for m in real}):
                        reasons[r] += 1
                else:
                    ok += 1
    return total, ok, other_os, reasons, elsewhere


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, roles_dir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    roles = sys.argv[3:] or sorted(
        d for d in os.listdir(roles_dir) if os.path.isdir(os.path.join(roles_dir, d, "tasks"))
    )
    all_reasons = collections.Counter()
    rows = []
    sums = [0, 0]
    for role in roles:
        total, ok, other, reasons, elsewhere = survey(binary, roles_dir, role)
        sums[0] += total
        sums[1] += ok
        all_reasons.update(reasons)
        top = "; ".join("%s (%d)" % (r, n) for r, n in reasons.most_common(3)) or "—"
        if elsewhere:
            top += "; outside tasks/: " + ", ".join(
                "%s: %s" % k for k in sorted(elsewhere)
            )
        share = "%d%%" % round(100 * ok / total) if total else "—"
        rows.append("| %s | %d | %d | %s | %d | %s |" % (role, total, ok, share, other, top))
    print("| role | tasks | validate | share | other-OS tasks (not counted) | top reasons (tasks) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    share = round(100 * sums[1] / sums[0]) if sums[0] else 0
    print("| **all** | %d | %d | %d%% | | |" % (sums[0], sums[1], share))
    print()
    print("| reason | tasks |")
    print("|---|---|")
    for r, n in all_reasons.most_common(15):
        print("| %s | %d |" % (r, n))


if __name__ == "__main__":
    main()
