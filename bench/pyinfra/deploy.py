"""The benchmark role of bench/engine/roles/bench written for pyinfra: the same 40 operations
(directory, 10 lines, 10 directories, 10 templates, 9 guarded commands) and one handler."""

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import files, server

files.directory(name="bench dir", path="/etc/bench", mode="755", _sudo=True)
for i in range(10):
    files.line(name=f"line {i}", path="/etc/bench/lines.conf", line=f"key{i} = value{i}", _sudo=True)
for i in range(10):
    files.directory(name=f"dir {i}", path=f"/etc/bench/d{i}", mode="755", _sudo=True)
first = None
for i in range(10):
    op = files.template(
        name=f"template {i}",
        src="item.conf.j2",
        dest=f"/etc/bench/t{i}.conf",
        mode="644",
        n=i,
        _sudo=True,
    )
    first = first or op
for i in range(9):
    # Ansible's `command ... creates=`: run only when the file is missing.
    if not host.get_fact(File, path=f"/etc/bench/c{i}"):
        server.shell(name=f"command {i}", commands=[f"touch /etc/bench/c{i}"], _sudo=True)
server.shell(
    name="bench changed",
    commands=["touch /etc/bench/handler-ran"],
    _if=first.did_change,
    _sudo=True,
)
