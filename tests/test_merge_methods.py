"""The merge-method registry: one declaration per method, the names every table checks against."""

from __future__ import annotations

from mergelaw import curves
from mergelaw.merge_methods import METHOD_NAMES, METHODS, Combined, Dropped, Elected, Trimmed


def test_the_curves_table_takes_its_method_names_from_the_registry():
    assert curves.KNOWN_METHODS == METHOD_NAMES == tuple(METHODS)
    assert set(METHOD_NAMES) >= {"average", "task_arithmetic", "ties", "dare", "dare_ties"}


def test_a_method_takes_exactly_the_parameters_of_its_steps():
    steps = {"trim": Trimmed, "dare": Dropped}
    for method in METHODS.values():
        expected = set(Combined.model_fields)
        if method.sparsify is not None:
            expected |= set(steps[method.sparsify].model_fields)
        if method.consensus:
            expected |= set(Elected.model_fields)
        assert set(method.params.model_fields) == expected, method.name
        assert set(method.defaults) <= expected, method.name


def test_every_method_default_is_a_valid_parameter_set():
    for method in METHODS.values():
        params = method.params.model_validate(dict(method.defaults))
        assert all(getattr(params, key) == value for key, value in method.defaults.items())


def test_declarations_are_frozen():
    import dataclasses

    import pytest

    method = METHODS["ties"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        method.consensus = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        method.defaults["c"] = 2.0  # type: ignore[index]
