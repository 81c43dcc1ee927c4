from __future__ import annotations

import pytest

from dataflywheel.ops import catalog, registry


def test_unknown_op_suggests_the_nearest_names():
    with pytest.raises(registry.UnknownOpError, match="did you mean 'sample'"):
        registry.get("sampel")
    with pytest.raises(registry.UnknownOpError) as e:
        registry.get("zzzzzz")
    assert "did you mean" not in str(e.value)


def test_every_registered_op_loads_and_is_documented():
    for name in registry.names():
        cls = registry.get(name)
        e = catalog.entry(name)
        assert e["summary"], f"{name} needs a docstring"
        for pname, _typ, _default, desc in e["params"]:
            assert desc, f"{name}.{pname} needs a description"
        assert cls.Params.model_config.get("extra") == "forbid"


def test_register_needs_module_and_class():
    with pytest.raises(Exception, match="module:ClassName"):
        registry.register("x", "just_a_module")


def _op_classes():
    """Every Op subclass defined in dataflywheel.ops, by importing every module there."""
    import importlib
    import inspect
    import pkgutil

    import dataflywheel.ops as ops_pkg
    from dataflywheel.ops.base import Op

    found = {}
    for info in pkgutil.walk_packages(ops_pkg.__path__, "dataflywheel.ops."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Op) and cls.__module__ == info.name:
                found[f"{cls.__module__}:{cls.__qualname__}"] = cls
    return found


def test_every_concrete_op_class_is_registered():
    classes = _op_classes()
    bases = {b for cls in classes.values() for b in cls.__mro__[1:]}
    kinds = ("dataflywheel.ops.base:", "dataflywheel.ops.llm:")  # the contract's own bases
    concrete = {t for t, cls in classes.items() if cls not in bases and not t.startswith(kinds)}
    registered = set(registry.REGISTRY.values())
    assert concrete - registered == set(), "register these (or make them bases of a registered op)"
    for target in registered - concrete:
        assert target.startswith("tests."), f"{target} is registered but is not a concrete op class"


def test_every_op_is_in_the_readme_and_its_catalog_columns_are_the_ops_own():
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    missing = [n for n in registry.names() if not n.startswith("test_") and f"`{n}`" not in readme]
    assert not missing, f"README.md does not mention: {missing}"
    # the catalog shows what an op really reads and writes (parameter-dependent columns included)
    e = catalog.entry("alpagasus")
    assert e["writes"] == ["score_alpagasus", "error_alpagasus", "raw_alpagasus"]
    assert catalog.entry("filter")["reads"] == ["<column>"]
