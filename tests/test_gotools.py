"""kubeprobe/gotools.py: the one builder of every Go tool (lab, kind, self-tests), exercised with
a real `go build` of a small vendored module into a throwaway tools directory."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from kubeprobe import gotools
from kubeprobe.kind import tools as kind_tools
from kubeprobe.lab import gotools as lab_tools
from tests import tools as test_tools

needs_go = pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")


@pytest.fixture
def tools_root(tmp_path, monkeypatch):
    """Tools land in tmp_path; the module and build caches stay the shared ones."""
    root = tmp_path / "tools"
    monkeypatch.setattr(gotools, "tools_root", lambda: root)
    return root


def greeter(tmp_path, message: str = "hello from a vendored module"):
    src = tmp_path / "greeter-src"
    (src / "cmd" / "greet").mkdir(parents=True)
    (src / "go.mod").write_text("module example.test/greeter\n\ngo 1.22\n")
    (src / "cmd" / "greet" / "main.go").write_text(
        f'package main\n\nimport "os"\n\nfunc main() {{ os.Stdout.WriteString("{message}\\n") }}\n')
    return src


@needs_go
def test_local_module_is_built_once_stamped_and_found_again(tmp_path, tools_root):
    tool = gotools.GoTool("greet", "example.test/greeter", "v0.0.1", ("./cmd/greet",),
                          how="local", source=greeter(tmp_path))
    lines = []
    binary = gotools.ensure(tool, log=lines.append)
    assert binary == tools_root / "greet-v0.0.1" / "greet"
    out = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    assert out == "hello from a vendored module\n"
    recorded = json.loads((tool.dir / "build.stamp.json").read_text())
    assert recorded["version"] == "v0.0.1" and recorded["module"] == "example.test/greeter"
    assert gotools.stamp(tool) == recorded
    assert any(line.startswith("building greet v0.0.1") for line in lines)

    again = []
    assert gotools.ensure(tool, log=again.append) == binary
    assert again == []                     # found, not rebuilt


@needs_go
def test_another_version_of_the_same_tool_is_not_taken_for_the_cached_one(tmp_path, tools_root):
    built = gotools.GoTool("greet", "example.test/greeter", "v0.0.1", ("./cmd/greet",),
                           how="local", source=greeter(tmp_path))
    gotools.ensure(built)
    newer = gotools.GoTool("greet", "example.test/greeter", "v0.0.2", ("./cmd/greet",),
                           how="local", source=built.source)
    assert gotools.stamp(newer) is None
    # a stamp whose version was edited by hand is not trusted either
    (built.dir / "build.stamp.json").write_text(json.dumps({"version": "v9"}))
    assert gotools.stamp(built) is None


@needs_go
def test_a_binary_missing_beside_its_stamp_means_not_built(tmp_path, tools_root):
    tool = gotools.GoTool("greet", "example.test/greeter", "v0.0.1", ("./cmd/greet",),
                          how="local", source=greeter(tmp_path))
    gotools.ensure(tool).unlink()
    assert gotools.stamp(tool) is None


@needs_go
def test_a_failing_build_says_what_the_compiler_said(tmp_path, tools_root):
    src = greeter(tmp_path)
    (src / "cmd" / "greet" / "main.go").write_text("package main\n\nfunc main() { undefinedCall() }\n")
    tool = gotools.GoTool("greet", "example.test/greeter", "v0.0.1", ("./cmd/greet",),
                          how="local", source=src)
    with pytest.raises(gotools.ToolUnavailable, match="undefined: undefinedCall"):
        gotools.ensure(tool)
    assert gotools.stamp(tool) is None


def test_without_go_the_tool_says_so(tmp_path, tools_root, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    tool = gotools.GoTool("greet", "example.test/greeter", "v0.0.1", ("./cmd/greet",),
                          how="local", source=tmp_path)
    with pytest.raises(gotools.ToolUnavailable, match="go is not installed: greet cannot be built"):
        gotools.ensure(tool)


def test_build_methods_are_checked_when_a_tool_is_declared(tmp_path):
    with pytest.raises(ValueError, match="unknown build method 'make'"):
        gotools.GoTool("x", "example.test/x", "v1", ("./x",), how="make")
    with pytest.raises(ValueError, match="source directory goes with how='local' only"):
        gotools.GoTool("x", "example.test/x", "v1", ("./x",), how="local")
    with pytest.raises(ValueError, match="source directory goes with how='local' only"):
        gotools.GoTool("x", "example.test/x", "v1", ("./x",), source=tmp_path)


def test_wrapper_module_keeps_upstreams_replaces_and_requires_the_module():
    upstream = ("module github.com/example/thing\n\ngo 1.25\n\nrequire golang.org/x/net v0.1.0\n\n"
                "replace golang.org/x/net => golang.org/x/net v0.2.0\n")
    tool = gotools.GoTool("thing", "github.com/example/thing", "v1.2.3",
                          ("github.com/example/thing/cmd/thing",), how="wrapper")
    rendered = gotools.wrapper_gomod(upstream, tool)
    assert "module kubeprobe.local/tools/thing\n" in rendered
    assert "module github.com/example/thing" not in rendered
    assert "replace golang.org/x/net => golang.org/x/net v0.2.0" in rendered
    assert "require github.com/example/thing v1.2.3\n" in rendered
    assert rendered.rstrip().endswith("tool github.com/example/thing/cmd/thing")


def test_every_tool_kubeprobe_builds_has_its_own_directory_and_binary_names():
    every = [test_tools.ACTIONLINT, *lab_tools.TOOLS.values(), kind_tools.KIND, kind_tools.HELM,
             *kind_tools.ENGINE_TOOLS, *kind_tools.NODE_TOOLS]
    dirs = {tool.dir for tool in every}
    assert len(dirs) == len({tool.name for tool in every})   # RUNC is in two groups
    assert lab_tools.POLICY_CONTROLLER.binary.name == "policy-controller"
    assert kind_tools.RUNC.binary.name == "runc"
    assert kind_tools.MOBY.binaries() == ["dockerd", "docker-proxy"]
    assert kind_tools.KINDNETD.source.joinpath("go.mod").is_file()
