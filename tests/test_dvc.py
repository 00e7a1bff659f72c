"""dvc.yaml cannot drift from the code: each stage depends on every module its entry point reaches, lists the params
keys it reads (and no key that only changes speed), and describes itself."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from unmasking import params as P

LIB = ROOT / "lib"
PKG = LIB / "unmasking"
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def module_file(name: str) -> Path | None:
    """The file of module ``unmasking....`` (a package's __init__.py), or None when it is not the project's."""
    parts = name.split(".")
    if parts[0] != "unmasking":
        return None
    base = LIB.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def imported(tree: ast.AST) -> set[str]:
    """The ``unmasking`` modules a piece of code imports anywhere (inside functions too), with their packages."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("unmasking")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unmasking"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    with_packages = set()
    for name in out:
        parts = name.split(".")
        with_packages |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return {n for n in with_packages if module_file(n)}


def reached(entry_modules: set[str]) -> set[Path]:
    """Every project file reached from ``entry_modules`` by imports, transitively."""
    todo, seen = list(entry_modules), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported(ast.parse(module_file(name).read_text()))
    return {module_file(n) for n in seen}


def notebook_code(path: Path) -> ast.AST:
    nb = json.loads(path.read_text())
    src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return ast.parse(src)


def stage_entry(stage: dict) -> set[str]:
    """The modules a stage's command and notebook import."""
    cmd = stage["cmd"].split()
    mods = {cmd[cmd.index("-m") + 1]} if "-m" in cmd else set()
    for dep in stage.get("deps", []):
        if str(dep).endswith(".ipynb"):
            mods |= imported(notebook_code(ROOT / dep))
    parts = set()
    for m in mods:
        p = m.split(".")
        parts |= {".".join(p[: i + 1]) for i in range(len(p))}
    return {m for m in parts if module_file(m)}


def stages() -> dict[str, dict]:
    """dvc.yaml's stages, with foreach stages expanded (``name@item``)."""
    out = {}
    for name, st in DVC["stages"].items():
        if "foreach" in st:
            for item in st["foreach"]:
                text = json.dumps(st["do"]).replace("${item}", item)
                out[f"{name}@{item}"] = json.loads(text)
        else:
            out[name] = st
    return out


@pytest.mark.parametrize("name", list(stages()))
def test_each_stage_depends_on_every_module_it_reaches(name):
    st = stages()[name]
    need = {p.relative_to(ROOT).as_posix() for p in reached(stage_entry(st))}
    have = {str(d) for d in st.get("deps", [])}
    assert need <= have, f"{name}: dvc.yaml misses {sorted(need - have)}"
    extra = {d for d in have if d.startswith("lib/") and d.endswith(".py")} - need
    assert not extra, f"{name}: dvc.yaml lists modules it does not reach: {sorted(extra)}"


@pytest.mark.parametrize("name", list(stages()))
def test_each_stage_lists_existing_params_keys_and_no_speed_only_key(name):
    params = P.load()
    for key in stages()[name].get("params", []):
        node = params
        for part in str(key).split("."):
            assert part in node, f"{name}: params key {key} is not in params.yaml"
            node = node[part]
        assert key not in P.PERFORMANCE_KEYS, f"{name}: {key} only changes speed, never the outputs"
        assert not any(p.startswith(f"{key}.") for p in P.PERFORMANCE_KEYS), f"{name}: {key} holds a speed-only key"


@pytest.mark.parametrize("name", list(stages()))
def test_each_stage_has_a_description(name):
    assert len(stages()[name].get("desc", "")) > 20


def test_every_params_key_is_read_by_a_stage_or_only_changes_speed():
    listed = {str(k) for st in stages().values() for k in st.get("params", [])}

    def leaves(node, prefix=""):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                yield from leaves(v, f"{key}.")
            else:
                yield key

    for key in leaves(P.load()):
        covered = key in P.PERFORMANCE_KEYS or any(key == k or key.startswith(f"{k}.") for k in listed)
        assert covered, f"{key}: no stage lists it (or it is missing from params.PERFORMANCE_KEYS)"


def test_the_dependency_finder_sees_imports_inside_functions(tmp_path):
    tree = ast.parse("def f():\n    from unmasking import faces\n    import unmasking.data.kaggle\n")
    assert {"unmasking.faces", "unmasking.data", "unmasking.data.kaggle"} <= imported(tree)
    assert PKG / "data" / "fml.py" in reached({"unmasking.data.kaggle"})  # kaggle imports fml


def outputs(stage: dict) -> set[str]:
    return {o if isinstance(o, str) else next(iter(o)) for key in ("outs", "metrics", "plots")
            for o in stage.get(key, [])}


def downstream(name: str) -> set[str]:
    """The stages that a change in stage ``name``'s outputs reruns, transitively."""
    all_ = stages()
    todo, seen = [name], set()
    while todo:
        outs = outputs(all_[todo.pop()])
        for other, st in all_.items():
            if other not in seen and outs & {str(d) for d in st.get("deps", [])}:
                seen.add(other)
                todo.append(other)
    return seen


def test_every_data_dependency_is_a_stage_output_or_committed():
    made = set().union(*(outputs(st) for st in stages().values()))
    for name, st in stages().items():
        for dep in map(str, st.get("deps", [])):
            assert dep in made or (ROOT / dep).exists() and not dep.startswith(("data/", "models/")), (name, dep)


def test_new_mask_unet_weights_rerun_the_gan_the_evaluation_shipping_and_the_report():
    assert downstream("train@mask_unet") == {"train_mask_gan", "evaluate", "ship", "report"}
    assert downstream("detector") == {"evaluate", "ship", "report"}
    assert downstream("inputs") == set(stages()) - {"inputs"}
