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
