"""Write a pyinfra inventory (Python) for the hosts of an Ansible YAML inventory (a lab's)."""
import json
import shlex
import subprocess
import sys

src, limit, out = sys.argv[1], sys.argv[2], sys.argv[3]
data = json.loads(subprocess.check_output(["ansible-inventory", "-i", src, "--list"]))
hostvars = data["_meta"]["hostvars"]


def members(group):
    g = data.get(group, {})
    out = list(g.get("hosts", []))
    for child in g.get("children", []):
        out += [h for h in members(child) if h not in out]
    return out


selected = list(hostvars) if limit == "all" else members(limit)
hosts = []
for name in selected:
    v = hostvars[name]
    args = shlex.split(v.get("ansible_ssh_common_args", ""))
    known = next((a.split("=", 1)[1] for a in args if a.startswith("UserKnownHostsFile=")), None)
    hosts.append((v.get("ansible_host", name), {
        "ssh_user": v["ansible_user"],
        "ssh_key": v["ansible_ssh_private_key_file"],
        "ssh_known_hosts_file": known,
        "ssh_strict_host_key_checking": "yes",
    }))
with open(out, "w") as f:
    f.write(f"hosts = {hosts!r}\n")
